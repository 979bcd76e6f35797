"""Generality studies (subset paper, section 4): jobs composed like runs (`study=...`) that read finished runs
and write the same results contract under `<run.root>/<study>/...`, so `make tables` tabulates them.

Adding a study = a module in this package with `@register(name)` on a function (the run's spec) -> list of
records, + a YAML in conf/study/ + a test. The study's own keys are `spec.study[key]`."""

from __future__ import annotations

import glob
import math
from pathlib import Path
from typing import Callable

import torch

from spafit_exp.core import results
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.registry import Registry, discover
from spafit_exp.core.spec import RunSpec, StudySpec

STUDIES: Registry[Callable[[RunSpec], list[dict]]] = Registry("study")


def register(name: str):
    def decorate(fn):
        STUDIES.add(name, fn)
        return fn

    return decorate


def read_runs(key: str, spec) -> list[tuple[Path, dict]]:
    """(directory, record) of every run directory the glob `spec` matches; ConfigError naming `key` when none
    matches or a record cannot be read."""
    found = []
    for path in sorted(Path(p) for p in glob.glob(str(spec)) if (Path(p) / results.RESULTS).is_file()):
        try:
            record = results.read(path)
        except results.CorruptRecord as err:
            raise ConfigError(f"{key}: {err}") from None
        if record is not None:
            found.append((path, record))
    if not found:
        raise ConfigError(f"{key}={spec}: no run directory with a results.json")
    return found


def _dev_score(record: dict) -> float | None:
    best = (record.get("metrics") or {}).get("best") or {}
    score = (best.get("dev") or {}).get(record.get("main_metric"))
    finite = isinstance(score, (int, float)) and math.isfinite(score) and isinstance(record.get("lr"), (int, float))
    return float(score) if finite and record.get("status") == "completed" else None


def best_lr(records: list[dict]) -> tuple[float, dict[float, float]]:
    """The learning rate with the best mean dev main metric over seeds among the completed runs, and every rate's
    mean: the rule `make tables` chooses a cell's rate by (cells.select_lr; a tie goes to the lower rate).
    ValueError when no run has a dev score."""
    scores: dict[float, list[float]] = {}
    for record in records:
        if (score := _dev_score(record)) is not None:
            scores.setdefault(float(record["lr"]), []).append(score)
    means = {lr: sum(values) / len(values) for lr, values in sorted(scores.items())}
    if not means:
        raise ValueError("no completed run with a dev score")
    return max(means, key=means.get), means


def sources(study: StudySpec) -> list[tuple[Path | None, dict | None]]:
    """(run directory, record) of the runs to study; (None, None) = the pretrained model (study.run=null).
    study.run is a run directory or a glob; of a glob over a learning-rate grid only the runs at each cell's
    chosen rate are studied (cell = experiment, task, method tag, model; rate as `make tables` chooses it), all
    their seeds: the encoders the primary table reports. Failed and unfinished runs are never studied."""
    spec = study.get("run")
    if spec is None:
        return [(None, None)]
    cells: dict[tuple, list[tuple[Path, dict]]] = {}
    for path, record in read_runs("study.run", spec):
        key = tuple(str(record.get(k)) for k in ("experiment", "task", "method_tag", "model"))
        cells.setdefault(key, []).append((path, record))
    chosen = []
    for runs in cells.values():
        try:
            lr, _ = best_lr([record for _, record in runs])
        except ValueError:
            continue
        chosen += [(path, record) for path, record in runs if _dev_score(record) is not None and record["lr"] == lr]
    if not chosen:
        raise ConfigError(f"study.run={spec}: no completed run with a dev score")
    skipped = sum(map(len, cells.values())) - len(chosen)
    if skipped:
        print(f"study.run: {len(chosen)} runs at their cells' chosen learning rates; {skipped} others not studied")
    return sorted(chosen, key=lambda pair: str(pair[0]))


def source_runs(study: StudySpec) -> list[Path | None]:
    """The run directories `sources` studies; [None] = the pretrained model."""
    return [path for path, _ in sources(study)]


def merged_encoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's effective weights: LoRA factors merged into their base layers, peft names removed."""
    from peft.tuners.lora import LoraLayer  # ~3 s to import: only studies of LoRA runs pay it

    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.merge()
    state = model.base_model.state_dict()
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in state.items() if "lora_" not in k}


def run_study(spec: RunSpec) -> list[dict]:
    return STUDIES.get(spec.study.name)(spec)


discover(__name__, __path__)
