"""The composed config resolved, once, into the frozen `RunSpec` every layer below the run reads (core/spec.py):
the method's and the selector's options parsed into their typed options here and nowhere else, the fingerprint
computed here from the resolved config (its values unchanged: existing run directories keep theirs)."""

from __future__ import annotations

from dataclasses import replace

from omegaconf import DictConfig, OmegaConf

from spafit_exp.core import fingerprint
from spafit_exp.core.spec import (
    DataSpec,
    DecoderSpec,
    ModelSpec,
    RunOptions,
    RunSpec,
    StudySpec,
    TaskSpec,
    TrackingSpec,
    TrainerSpec,
    build,
    freeze,
)
from spafit_exp.methods import method_options
from spafit_exp.selection.selectors import selector_options


def resolve(cfg: DictConfig) -> RunSpec:
    """ConfigError (one line naming the key) on an option the method or the selector does not have."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    tree.pop("hydra", None)
    study = dict(tree.get("study") or {"name": "none"})
    selector = tree["selector"]
    return RunSpec(
        experiment_name=tree["experiment_name"],
        task=build(TaskSpec, tree["task"], "task"),
        model=build(ModelSpec, tree["model"], "model"),
        trainer=build(TrainerSpec, tree["trainer"], "trainer"),
        method=method_options(tree["method"]),
        selector=None if selector.get("name") == "none" else selector_options(selector),
        data=build(DataSpec, tree["data"], "data"),
        decoder=build(DecoderSpec, tree["decoder"], "decoder"),
        run=replace(build(RunOptions, tree["run"], "run"), fingerprint=freeze(fingerprint.of(tree))),
        tracking=build(TrackingSpec, tree["tracking"], "tracking"),
        study=StudySpec(study.pop("name"), freeze(study)),
        config=freeze(tree),
    )
