"""The commands the tool prints for the user to run next (a sweep's edge lines, the flat-loss warning) start from
the run's own overrides, so that they repeat its experiment: the config options chosen (`method=lora_i`, which a
record names by its internal name `lora`), the model, every other override. Only the swept key changes. A run
keeps its overrides in its record (`config.run.overrides`, from run/config.py's `job_overrides`)."""

from __future__ import annotations

import shlex


def key_of(override: str) -> str:
    """`+trainer.lr=1e-3` -> `trainer.lr`; `~run.force` -> `run.force`."""
    return override.split("=", 1)[0].lstrip("+~")


def command(overrides: list[str], drop: tuple[str, ...] = (), add: tuple[str, ...] | list[str] = ()) -> str:
    """`python -m spafit_exp -m` with `overrides` less the keys in `drop` and those `add` sets, then `add`; every
    argument quoted for a POSIX shell where it needs it (`'trainer.betas=[0.9,0.98]'`)."""
    replaced = set(drop) | {key_of(a) for a in add}
    args = [o for o in overrides if key_of(o) not in replaced] + list(add)
    return " ".join(["python -m spafit_exp -m", *(shlex.quote(a) for a in args)])
