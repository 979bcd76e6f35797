"""Learning-rate search with edge extension (subset paper, section 3.2): run a log-spaced grid; while the best
mean dev score sits at an edge of the LRs tried, add the next point past that edge (same log step) and run it,
until the best is interior or `--max-extensions` is reached. The record `lr_search.json` (next to the runs'
`lr=` folders) lists every LR tried, its score, the choice and whether it is interior.

    python -m spafit_exp.lr_search --grid 1e-5,1e-4,1e-3 --seeds 1,2 -- task=trec6 method=subset selector=random

A `-m` sweep gets the same rule after it finishes (`edge_commands`): every cell whose best rate sits at an edge
of the rates tried is named with the `-m` command that runs the next point past it (the cell's own overrides, only
the rate changed). Rates that all score the same are a tie, not an edge: nothing is extended.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from spafit_exp.core.commands import command, key_of
from spafit_exp.core.results import CorruptRecord, read, write_json_atomic
from spafit_exp.report.cells import KEYS, collect, select_lr


def next_lr(lrs: list[float], best: float) -> float:
    """The next rate past the edge where `best` sits, one step of the grid's own log spacing further."""
    lrs = sorted(lrs)
    new = best * lrs[-1] / lrs[-2] if best == lrs[-1] else best * lrs[0] / lrs[1]
    return float(f"{new:.3g}")  # 1e-06, not 1.0000000000000002e-06: LRs name run directories


def extend_grid(grid: list[float], score: Callable[[float], float], max_extensions: int = 4) -> dict:
    """`score(lr)` -> mean dev main metric (higher is better). Returns tried scores, best LR, interior flag. A
    non-finite score (NaN, ±Infinity: a failed rate) never wins. When every finite score is the same (a tie: no
    rate learnt more than another), there is no edge to extend: the search stops with `tie` set."""
    if len(grid) < 2:
        raise ValueError("the grid needs at least two learning rates")
    tried = {lr: score(lr) for lr in sorted(grid)}
    extensions = 0
    while True:
        lrs = sorted(tried)
        best = max(lrs, key=lambda lr: (tried[lr] if math.isfinite(tried[lr]) else -math.inf))
        interior = lrs[0] < best < lrs[-1]
        finite = [tried[lr] for lr in lrs if math.isfinite(tried[lr])]
        tie = len(finite) > 1 and math.isclose(min(finite), max(finite), rel_tol=1e-9, abs_tol=1e-12)
        if interior or tie or extensions >= max_extensions:
            break
        new = next_lr(lrs, best)
        tried[new] = score(new)
        extensions += 1
    return {"tried": {f"{lr:g}": tried[lr] for lr in sorted(tried)}, "best_lr": best, "interior": interior,
            "tie": tie, "extensions": extensions}


def _flag(cell, key: str) -> bool:
    value = cell.get(key)  # NaN where a cell has no scored run: no flag then
    return isinstance(value, (bool, np.bool_)) and bool(value)


def _overrides(runs) -> list[str] | None:
    """The stored overrides (`config.run.overrides`) of the first of `runs` whose record has them."""
    for path in runs.path:
        try:
            overrides = (((read(Path(path).parent) or {}).get("config") or {}).get("run") or {}).get("overrides")
        except CorruptRecord:
            continue
        if isinstance(overrides, list) and all(isinstance(o, str) for o in overrides):
            return overrides
    return None


def edge_commands(root: Path, argv: list[str]) -> list[str]:
    """One line per cell under `root` whose best mean dev score sits at an edge of the rates it completed (failed
    ones do not count, as in `make tables`): the `-m` command that runs the next rate past that edge — the cell's
    own stored overrides (`spafit_exp.core.commands`) with only trainer.lr changed (and the seeds: all of the cell's),
    plus the sweep's hydra.* launch settings from `argv`. A cell whose rates all score the same gets a `tie:`
    line: no rate is better, so there is no edge to extend."""
    runs = collect(root)
    if runs.empty:
        return []
    launch = [a for a in argv if key_of(a).startswith("hydra.") and not key_of(a).startswith("hydra.sweeper")]
    lines = []
    for _, cell in select_lr(runs).iterrows():
        name = f"{cell['task']} / {cell['method_tag']} / {cell['model']}"
        if _flag(cell, "tie"):
            main = cell["main_metric"]
            score = cell.get(f"mean.dev.{main}")  # the dev score: bare name only where dev is the reported split
            score = cell.get(f"mean.{main}") if score is None or pd.isna(score) else score
            lines.append(f"tie: {name}: all {cell['lrs_tried']} rates score {main}={score:.4f}: no rate is better, "
                         "nothing to extend")
            continue
        if not _flag(cell, "edge"):
            continue
        mine = runs[(runs[KEYS] == cell[KEYS]).all(axis=1)]
        done = mine[(mine.status == "completed") & mine[f"dev.{cell['main_metric']}"].notna()]
        lrs = sorted(done.lr.dropna().unique())
        failed = sorted(set(mine.lr.dropna()) - set(lrs))
        side = "upper" if cell["lr"] == lrs[-1] else "lower"
        new = next_lr(lrs, cell["lr"])
        line = f"edge: {name}: best lr {cell['lr']:g} at the {side} edge of {len(lrs)} rates"
        if failed:
            line += f" ({len(failed)} failed rate{'s' if len(failed) > 1 else ''} not counted: " \
                    + ", ".join(f"{lr:g}" for lr in failed) + ")"
        overrides = _overrides(pd.concat([done[done.lr == cell["lr"]].sort_values("seed"), mine]))
        if overrides is None:
            lines.append(f"{line}; next rate: trainer.lr={new:g} (the cell's records keep no command line: add "
                         "it to the command that ran them)")
            continue
        seeds = sorted(int(s) for s in mine.seed.dropna().unique())
        add = ([f"trainer.seed={','.join(map(str, seeds))}"] if len(seeds) > 1 else []) + [f"trainer.lr={new:g}"]
        lines.append(f"{line}; extend: " + command(overrides, drop=("lr_grid",), add=launch + add))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", required=True, help="comma-separated initial learning rates (log-spaced)")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds; the score is their mean")
    parser.add_argument("--max-extensions", type=int, default=4)
    parser.add_argument("overrides", nargs="*", help="run overrides, as for python -m spafit_exp")
    args = parser.parse_args(argv)

    from spafit_exp.run.app import run
    from spafit_exp.run.config import compose

    seeds = [int(s) for s in args.seeds.split(",")]
    last = {}

    def score(lr: float) -> float:
        values = []
        for seed in seeds:
            cfg = compose([*args.overrides, f"trainer.lr={lr}", f"trainer.seed={seed}"])
            record = run(cfg) or {}
            last["dir"] = Path(cfg.run.dir).parent.parent
            dev = ((record.get("metrics") or {}).get("best") or {}).get("dev") or {}
            values.append(dev.get(cfg.task.main_metric, math.nan))
        return sum(values) / len(values)

    outcome = extend_grid([float(x) for x in args.grid.split(",")], score, args.max_extensions)
    outcome["seeds"] = seeds
    write_json_atomic(last["dir"] / "lr_search.json", outcome)
    where = "TIE" if outcome["tie"] else "interior" if outcome["interior"] else "EDGE"
    print(f"lr search: best lr {outcome['best_lr']:g} ({where}) tried {outcome['tried']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
