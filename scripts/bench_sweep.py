"""Sweep throughput on one CPU machine: the same sweep run with launcher=basic (one job after another in one
process) and with launcher=local (jobs side by side, n_jobs and threads auto: spafit_exp/run/packing.py), back to back,
each in its own fresh run.root and data cache under /tmp. Default: 8 methods × 3 seeds = 24 runs on a 1,000-row
SST-2 slice, 1 epoch, 400 dev rows, no saved tensors, no resume checkpoints.

Prints (and writes <out>/sweep.{json,md}) the CPU, each launcher's wall time, runs/hour, the ratio to the first
launcher, and where the runs' time went (the records' per-phase timing). Run it on a quiet machine: other jobs
on the cores change both numbers, the ratio most.

    python -m scripts.bench_sweep                                   # the 24-run measurement (long)
    python -m scripts.bench_sweep --model tiny_bert --rows 32 --eval-rows 32 --methods full_ft,full_bitfit --seeds 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spafit_exp import REPO_ROOT  # noqa: E402
from spafit_exp.core import results
from spafit_exp.core.run_dir import run_dirs  # noqa: E402
from spafit_exp.core.timing import PHASES, phase_totals  # noqa: E402

# Eight methods of conf/method that fit the embedded 6-layer model (spafit: its 6-layer split, docs/recommended_lr.md)
METHODS = "full_ft,full_bitfit,lora_ii,spafit,stoc_tuning,top_tuning,random_tuning,multi_head"


def sweep_args(args, root: Path, launcher: str) -> list[str]:
    return ["-m", f"run.root={root}", "experiment_name=bench_sweep", f"model={args.model}", "task=sst2",
            f"method={args.methods}", f"trainer.seed={args.seeds}", f"trainer.max_train_samples={args.rows}",
            f"trainer.max_eval_samples={args.eval_rows}", f"trainer.epochs={args.epochs}",
            "trainer.save_trainable=false", "trainer.checkpoint_every=0", f"launcher={launcher}", *args.extra]


def measure(args, root: Path, launcher: str) -> dict:
    """One sweep in a fresh process (imports included, as a user waits for them) and what its records say."""
    command = [sys.executable, "-m", "spafit_exp", *sweep_args(args, root / "runs", launcher)]
    env = {**os.environ, "SPAFIT_CACHE": str(root / "cache"), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HYDRA_FULL_ERROR": "0"}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    states = [d.state() for d in run_dirs(root / "runs")]
    done = [s.record for s in states if s.state == "completed"]
    timings = [r.timing or {} for r in done]
    totals = {p: sum(float(t.get(f"{p}_s") or 0.0) for t in timings) for p in PHASES}
    packing = next((line for line in proc.stdout.splitlines() if line.startswith("launcher=local:")), "")
    return {"launcher": launcher, "exit_code": proc.returncode, "wall_s": wall, "runs": len(states),
            "completed": len(done), "runs_per_hour": len(done) / wall * 3600, "loadavg_start": round(load, 2),
            "run_wall_s": sum(float(t.get("wall_s") or 0.0) for t in timings), "phase_s": totals,
            "phases": phase_totals(timings), "packing": packing, "stderr_tail": proc.stderr[-2000:]}


def markdown(rows: list[dict], meta: dict) -> str:
    base = rows[0]
    lines = [f"# Sweep throughput: {meta['runs_planned']} runs ({meta['methods']} × seeds {meta['seeds']}), "
             f"{meta['model']} on SST-2 ({meta['rows']} rows, {meta['epochs']} epoch(s), {meta['eval_rows']} dev rows)",
             "", f"CPU: {meta['cpu']}; {meta['cpus']} CPUs usable", "",
             "| launcher | completed | wall (s) | runs/hour | speed-up vs first | summed run wall (s) | load avg at start |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['launcher']} | {row['completed']}/{row['runs']} | {row['wall_s']:.1f} | "
                     f"{row['runs_per_hour']:.1f} | {base['wall_s'] / row['wall_s']:.2f} | {row['run_wall_s']:.1f} | "
                     f"{row['loadavg_start']} |")
    lines.append("")
    for row in rows:
        lines.append(f"- {row['launcher']}: {row['phases'] or 'no per-phase timing in the records'}"
                     + (f" ({row['packing']})" if row["packing"] else ""))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=METHODS, help="comma list of conf/method names")
    parser.add_argument("--seeds", default="1,2,3", help="comma list")
    parser.add_argument("--rows", type=int, default=1000, help="training rows (the first N of SST-2's train split)")
    parser.add_argument("--eval-rows", type=int, default=400, help="dev rows scored")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--launchers", default="basic,local", help="comma list, run in this order")
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("extra", nargs="*", help="more overrides for every run (key=value)")
    args = parser.parse_args()
    from spafit_exp.run.packing import cores

    planned = len(args.methods.split(",")) * len(args.seeds.split(","))
    meta = {"command": " ".join(["python", *sys.argv]), "cpu": results.cpu_name(), "cpus": cores(),
            "machine": results.cpu_summary(), "runs_planned": planned, **vars(args)}
    rows = []
    for launcher in args.launchers.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-sweep-{launcher}-") as root:
            print(f"{launcher}: {planned} runs under {root} ...", flush=True)
            rows.append(measure(args, Path(root), launcher))
            print(f"{launcher}: {rows[-1]['completed']}/{rows[-1]['runs']} completed in {rows[-1]['wall_s']:.1f}s "
                  f"(exit {rows[-1]['exit_code']})", flush=True)
    results.write_bench(args.out, "sweep", meta, rows, markdown(rows, meta))
    failed = [row for row in rows if row["exit_code"] != 0 or row["completed"] != planned]
    for row in failed:
        print(f"{row['launcher']}: exit {row['exit_code']}, {row['completed']} of {planned} completed:\n"
              f"{row['stderr_tail']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
