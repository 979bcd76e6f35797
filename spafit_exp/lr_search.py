"""Learning-rate search with edge extension (subset paper, section 3.2): run a log-spaced grid; while the best
mean dev score sits at an edge of the LRs tried, add the next point past that edge (same log step) and run it,
until the best is interior or `--max-extensions` is reached. The record `lr_search.json` (next to the runs'
`lr=` folders) lists every LR tried, its score, the choice and whether it is interior.

    python -m spafit_exp.lr_search --grid 1e-5,1e-4,1e-3 --seeds 1,2 -- task=trec6 method=subset selector=random

A `-m` sweep gets the same rule after it finishes (`edge_commands`): every cell whose best rate sits at an edge
of the rates tried is named with the `-m` command that runs the next point past it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable

from spafit_exp.cells import KEYS, collect, select_lr
from spafit_exp.results import write_json_atomic

# Overrides a cell's extension command sets itself (everything else of the sweep's command line is kept)
CELL_OVERRIDES = ("task", "method", "selector", "model", "trainer.lr", "lr_grid")


def next_lr(lrs: list[float], best: float) -> float:
    """The next rate past the edge where `best` sits, one step of the grid's own log spacing further."""
    lrs = sorted(lrs)
    new = best * lrs[-1] / lrs[-2] if best == lrs[-1] else best * lrs[0] / lrs[1]
    return float(f"{new:.3g}")  # 1e-06, not 1.0000000000000002e-06: LRs name run directories


def extend_grid(grid: list[float], score: Callable[[float], float], max_extensions: int = 4) -> dict:
    """`score(lr)` -> mean dev main metric (higher is better). Returns tried scores, best LR, interior flag. A
    non-finite score (NaN, ±Infinity: a failed rate) never wins."""
    if len(grid) < 2:
        raise ValueError("the grid needs at least two learning rates")
    tried = {lr: score(lr) for lr in sorted(grid)}
    extensions = 0
    while True:
        lrs = sorted(tried)
        best = max(lrs, key=lambda lr: (tried[lr] if math.isfinite(tried[lr]) else -math.inf))
        interior = lrs[0] < best < lrs[-1]
        if interior or extensions >= max_extensions:
            break
        new = next_lr(lrs, best)
        tried[new] = score(new)
        extensions += 1
    return {"tried": {f"{lr:g}": tried[lr] for lr in sorted(tried)}, "best_lr": best, "interior": interior,
            "extensions": extensions}


def edge_commands(root: Path, argv: list[str]) -> list[str]:
    """One line per cell under `root` whose best mean dev score is at an edge of the rates tried: the cell and the
    `python -m spafit_exp -m` command (the sweep's own overrides, narrowed to the cell) that runs the next rate."""
    runs = collect(root)
    if runs.empty:
        return []
    keep = [a for a in argv if a not in ("-m", "--multirun") and a.split("=", 1)[0].lstrip("+~") not in CELL_OVERRIDES]
    lines = []
    for _, cell in select_lr(runs).iterrows():
        if not cell.get("edge"):
            continue
        mine = runs[(runs[KEYS] == cell[KEYS]).all(axis=1)]
        lrs = sorted(mine.lr.dropna().unique())
        first = mine.iloc[0]
        narrowed = [f"task={cell['task']}", f"method={first['method']}", f"model={cell['model']}"]
        if first["selector"] not in (None, "none"):
            narrowed.append(f"selector={first['selector']}")
        side = "upper" if cell["lr"] == lrs[-1] else "lower"
        lines.append(f"edge: {cell['task']} / {cell['method_tag']} / {cell['model']}: best lr {cell['lr']:g} at the "
                     f"{side} edge of {len(lrs)} rates; extend: python -m spafit_exp -m "
                     + " ".join(keep + narrowed + [f"trainer.lr={next_lr(lrs, cell['lr']):g}"]))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", required=True, help="comma-separated initial learning rates (log-spaced)")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds; the score is their mean")
    parser.add_argument("--max-extensions", type=int, default=4)
    parser.add_argument("overrides", nargs="*", help="run overrides, as for python -m spafit_exp")
    args = parser.parse_args(argv)

    from spafit_exp.app import run
    from spafit_exp.config import compose

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
    print(f"lr search: best lr {outcome['best_lr']:g} ({'interior' if outcome['interior'] else 'EDGE'}) "
          f"tried {outcome['tried']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
