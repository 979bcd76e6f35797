"""Generality studies (subset paper, section 4): jobs composed like runs (`study=...`) that read finished runs
and write the same results contract under `<run.root>/<study>/...`, so `make tables` tabulates them.

Adding a study = a module in this package with `@register(name)` on a function (cfg) -> list of records, + a
YAML in conf/study/ + a test."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig

from spafit_exp.errors import ConfigError
from spafit_exp.registry import Registry, discover

STUDIES: Registry[Callable[[DictConfig], list[dict]]] = Registry("study")


def register(name: str):
    def decorate(fn):
        STUDIES.add(name, fn)
        return fn

    return decorate


def source_runs(cfg: DictConfig) -> list[Path | None]:
    """study.run as a directory, or a glob over run directories; None = the pretrained model."""
    spec = cfg.study.run
    if spec is None:
        return [None]
    matches = sorted(Path(p) for p in glob.glob(str(spec)) if (Path(p) / "results.json").is_file())
    if not matches:
        raise ConfigError(f"study.run={spec}: no run directory with a results.json")
    return matches


def merged_encoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's effective weights: LoRA factors merged into their base layers, peft names removed."""
    from peft.tuners.lora import LoraLayer  # ~3 s to import: only studies of LoRA runs pay it

    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.merge()
    state = model.base_model.state_dict()
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in state.items() if "lora_" not in k}


def run_study(cfg: DictConfig) -> list[dict]:
    return STUDIES.get(cfg.study.name)(cfg)


discover(__name__, __path__)
