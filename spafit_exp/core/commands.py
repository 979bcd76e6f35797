"""The commands the tool prints for the user to run next (a sweep's edge lines, the flat-loss warning) start from
the run's own overrides, so that they repeat its experiment: the config options chosen (`method=lora_i`, which a
record names by its internal name `lora`), the model, every other override. Only the swept key changes. A run
keeps its overrides in its record (`config.run.overrides`, from `job_overrides`)."""

from __future__ import annotations

import shlex

from omegaconf import DictConfig, OmegaConf


def key_of(override: str) -> str:
    """`+trainer.lr=1e-3` -> `trainer.lr`; `~run.force` -> `run.force`."""
    return override.split("=", 1)[0].lstrip("+~")


def _text(value) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def job_overrides(hydra_cfg: DictConfig, cfg: DictConfig) -> list[str]:
    """The overrides that make this run: Hydra's own (a sweep job's values), plus every key the config's sweeper
    would sweep (an experiment preset's tasks, selectors, seeds) pinned to this run's value, so that a `-m` command
    built from them runs this job's cell, not the preset's whole grid."""
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    given = {key_of(o) for o in overrides}
    choices = hydra_cfg.runtime.choices
    for key in OmegaConf.select(hydra_cfg, "sweeper.params") or {}:
        if key not in given:
            value = choices.get(key) if key in choices else OmegaConf.select(cfg, key)
            overrides.append(f"{key}={_text(value)}")
    return overrides


def command(overrides: list[str], drop: tuple[str, ...] = (), add: tuple[str, ...] | list[str] = ()) -> str:
    """`python -m spafit_exp -m` with `overrides` less the keys in `drop` and those `add` sets, then `add`; every
    argument quoted for a POSIX shell where it needs it (`'trainer.betas=[0.9,0.98]'`)."""
    replaced = set(drop) | {key_of(a) for a in add}
    args = [o for o in overrides if key_of(o) not in replaced] + list(add)
    return " ".join(["python -m spafit_exp -m", *(shlex.quote(a) for a in args)])
