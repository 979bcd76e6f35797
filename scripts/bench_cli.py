"""Command-line latency, against the targets the unit tests no longer time (a test must not fail because the machine
is busy; tests/test_e2e.py and tests/test_sweep.py check the structure that makes these fast instead):

- bad input: `python -m spafit_exp run.root=<tmp> <bad override>`, one line and exit 2 before any model, tokenizer
  or data loads; two kinds: refused while Hydra composes (`trainer.lrr=1`) and refused by validation after its
  imports (`trainer.lr=-1`). Target: under 10 s wall each.
- `python -m spafit_exp.sweep plan -m experiment=stoc_table1` (2,016 jobs; nothing under run.root): no model
  library imported, one compose per task × method. Target: under 15 CPU-seconds (and 90 s wall).

Each is a fresh process (imports included, as a user waits for them), run `--repeats` times; the median is
reported with the load average, since a busy machine is slower whatever the code. Writes <out>/cli.json and
<out>/cli.md; exits 1 when a median misses its target.

    python -m scripts.bench_cli
    python -m scripts.bench_cli --repeats 5 --out outputs/bench
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from spafit_exp import REPO_ROOT  # noqa: E402
from spafit_exp.core import results

CASES = [  # name, command after `python`, expected exit code, wall-time target (s), CPU target (s)
    ("bad input: Hydra refuses", ["-m", "spafit_exp", "trainer.lrr=1"], 2, 10.0, None),
    ("bad input: validation refuses", ["-m", "spafit_exp", "trainer.lr=-1"], 2, 10.0, None),
    ("sweep plan stoc_table1", ["-m", "spafit_exp.sweep", "plan", "-m", "experiment=stoc_table1"], 0, 90.0, 15.0),
]


def timed(command: list[str], root: str) -> tuple[int, float, float]:
    """(exit code, wall seconds, CPU seconds of the child) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *command, f"run.root={root}"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc.returncode, wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# CLI latency ({meta['machine']}; load {meta['loadavg_start']} → {meta['loadavg_end']})", "",
             "| command | wall s (median) | CPU s (median) | target | ok |", "|---|---:|---:|---|---|"]
    for row in rows:
        target = f"< {row['wall_target_s']:g} s wall" + (f", < {row['cpu_target_s']:g} s CPU"
                                                         if row["cpu_target_s"] else "")
        lines.append(f"| {row['name']} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {target} | "
                     f"{'yes' if row['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()
    meta = {"command": " ".join(["python", *sys.argv]), "machine": results.cpu_summary(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], **vars(args)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as root:
        for name, command, code, wall_target, cpu_target in CASES:
            runs = [timed(command, root) for _ in range(args.repeats)]
            if any(run[0] != code for run in runs):
                raise SystemExit(f"{name}: exit codes {[run[0] for run in runs]}, expected {code}")
            wall, cpu = statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)
            rows.append({"name": name, "command": " ".join(["python", *command]), "wall_s": wall, "cpu_s": cpu,
                         "wall_all_s": [r[1] for r in runs], "wall_target_s": wall_target, "cpu_target_s": cpu_target,
                         "ok": wall < wall_target and (cpu_target is None or cpu < cpu_target)})
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results.write_bench(args.out, "cli", meta, rows, markdown(rows, meta))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
