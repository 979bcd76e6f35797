"""Memory over a long run: peak RSS and RSS every N optimizer steps for the unpadded encoder (bucketed packed
sizes, 8 per octave: the default), the same with 16 buckets per octave (the default before), the unpadded encoder
with exact packed sizes (the code before bucketing), and the padded path, each in a fresh process, same data,
model, method and seed; with samples/s. Writes outputs/bench/memory.{json,md}.

    python -m scripts.bench_memory --task sst2 --rows 32000 --method full_ft     # 2,000 steps of batch 16
    python -m scripts.bench_memory --rows 480,2490 --task rte --method spafit    # the issue's table
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time

MODES = {"unpadded": {"unpad": True, "exact": False}, "unpadded-16": {"unpad": True, "exact": False, "buckets": 16},
         "unpadded-exact": {"unpad": True, "exact": True}, "padded": {"unpad": False, "exact": False}}


def measure(spec: dict) -> dict:
    """One configuration in this (fresh) process: the real loop, RSS sampled every `every` optimizer steps."""
    import psutil
    from accelerate import Accelerator

    from spafit_exp.engine.loop import train
    from spafit_exp.inputs.data import load_task_data
    from spafit_exp.inputs.modeling import build_tokenizer
    from spafit_exp.ops import unpad
    from spafit_exp.run.app import prepare
    from spafit_exp.run.config import compose
    from spafit_exp.run.spec import resolve

    if spec["exact"]:
        unpad.bucket = lambda tokens: tokens  # one packed size per token count: the code before bucketing
    if spec.get("buckets"):
        unpad.BUCKETS_PER_OCTAVE = spec["buckets"]  # e.g. 16 per octave, the default before 8
    cfg = compose([f"task={spec['task']}", f"method={spec['method']}", f"trainer.max_train_samples={spec['rows']}",
                   f"trainer.epochs={spec['epochs']}", "trainer.eval_train_samples=0", "trainer.max_eval_samples=64",
                   f"trainer.unpad={str(spec['unpad']).lower()}", "trainer.checkpoint_every=0"])
    run_spec = resolve(cfg)
    data = load_task_data(run_spec, build_tokenizer(run_spec.model))
    method = prepare(run_spec)
    process, samples, steps = psutil.Process(), [], [0]
    inner = method.before_step

    def sample_rss():  # the method's own hook still runs; RSS read every `every` steps
        inner()
        steps[0] += 1
        if steps[0] % spec["every"] == 0:
            samples.append((steps[0], process.memory_info().rss))

    method.before_step = sample_rss
    started = time.perf_counter()
    outcome = train(run_spec, method, data, Accelerator())
    return {**spec, "steps": outcome.steps, "train_s": outcome.train_seconds, "wall_s": time.perf_counter() - started,
            "samples_per_s": outcome.train_samples / outcome.train_seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_mb": [(s, r / 2**20) for s, r in samples]}


def _child(spec, queue):
    queue.put(measure(spec))


def run_fresh(spec: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(spec, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def growth(rss: list[tuple[int, float]]) -> float:
    """RSS at the end minus RSS after the first fifth of the run (warm-up), in MB."""
    if len(rss) < 5:
        return float("nan")
    return rss[-1][1] - rss[len(rss) // 5][1]


def main(argv: list[str] | None = None) -> int:
    from scripts.machine import describe, peaks
    from spafit_exp.core.results import write_bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--method", default="full_ft")
    parser.add_argument("--rows", default="32000", help="comma list: training rows per configuration")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--every", type=int, default=50, help="optimizer steps between RSS samples")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args(argv)
    rows = []
    for n in [int(r) for r in args.rows.split(",")]:
        for mode in args.modes.split(","):
            spec = {"mode": mode, "task": args.task, "method": args.method, "rows": n, "epochs": args.epochs,
                    "every": args.every, **MODES[mode]}
            result = run_fresh(spec)
            result["growth_mb"] = growth(result["rss_mb"])
            rows.append(result)
            print(f"{mode:>15} rows={n}: peak RSS {result['peak_rss_mb']:.0f} MB, growth after warm-up "
                  f"{result['growth_mb']:.0f} MB, {result['samples_per_s']:.1f} samples/s ({result['steps']} steps)",
                  flush=True)
    meta = {"cpu": describe(peaks()), "command": "python -m scripts.bench_memory " + " ".join(argv or sys.argv[1:])}
    lines = [f"Memory over a run — {meta['command']} — {meta['cpu']}", "",
             "| mode | task | method | rows × epochs | steps | peak RSS (MB) | RSS growth after warm-up (MB) | samples/s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['task']} | {r['method']} | {r['rows']} × {r['epochs']} | {r['steps']} | "
                     f"{r['peak_rss_mb']:.0f} | {r['growth_mb']:.0f} | {r['samples_per_s']:.1f} |")
    write_bench(args.out, "memory", meta, rows, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
