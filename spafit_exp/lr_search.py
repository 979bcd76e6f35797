"""Learning-rate search with edge extension (subset paper, section 3.2): run a log-spaced grid; while the best
mean dev score sits at an edge of the LRs tried, add the next point past that edge (same log step) and run it,
until the best is interior or `--max-extensions` is reached. The record `lr_search.json` (next to the runs'
`lr=` folders) lists every LR tried, its score, the choice and whether it is interior.

    python -m spafit_exp.lr_search --grid 1e-5,1e-4,1e-3 --seeds 1,2 -- task=trec6 method=subset selector=random
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable

from spafit_exp.results import write_json_atomic


def extend_grid(grid: list[float], score: Callable[[float], float], max_extensions: int = 4) -> dict:
    """`score(lr)` -> mean dev main metric (higher is better). Returns tried scores, best LR, interior flag."""
    if len(grid) < 2:
        raise ValueError("the grid needs at least two learning rates")
    tried = {lr: score(lr) for lr in sorted(grid)}
    extensions = 0
    while True:
        lrs = sorted(tried)
        best = max(lrs, key=lambda lr: (tried[lr] if not math.isnan(tried[lr]) else -math.inf))
        interior = lrs[0] < best < lrs[-1]
        if interior or extensions >= max_extensions:
            break
        if best == lrs[-1]:
            new = best * lrs[-1] / lrs[-2]
        else:
            new = best * lrs[0] / lrs[1]
        new = float(f"{new:.3g}")  # 1e-06, not 1.0000000000000002e-06: LRs name run directories
        tried[new] = score(new)
        extensions += 1
    return {"tried": {f"{lr:g}": tried[lr] for lr in sorted(tried)}, "best_lr": best, "interior": interior,
            "extensions": extensions}


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
