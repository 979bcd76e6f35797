"""Weighted sampling of k of n without replacement: ours (spafit_exp.ops.sampling, torch) vs NumPy, one run.

Same weights for everyone: w = randn(n)^2 (float32, an I^2-like heavy-ish tail), p = w / sum(w) in float64 for
NumPy. Sizes default to the embedded MiniLM (22.7M), roberta-base (125M) and roberta-large (355M) parameter
counts; k = 0.08% of n. Reported: the median of the repeats, in seconds.

- ours (CPU): `sample_without_replacement(w, k, g)` on the CPU weights (single-threaded, `CPU_THREADS=1`);
  also with torch's own thread setting (`CPU_THREADS=None`) for comparison.
- NumPy: `numpy.random.choice(n, k, replace=False, p=p)` (legacy) and `default_rng().choice(...)`, with p
  already prepared (the float64 conversion and normalisation, `numpy_prep_s`, are not counted on CPU).
- CUDA (when `--device` allows it and a GPU is present): ours on the GPU weights (timed with
  `torch.cuda.synchronize`), and NumPy charged with what it needs from the GPU: the device-to-host copy and
  the preparation of p plus the faster NumPy choice (`numpy_from_gpu_s`).

Writes <out>/sampling.json and <out>/sampling.md.

    python -m scripts.bench_sampling                                  # 22.7M, 125M, 355M
    python -m scripts.bench_sampling --sizes 22.7e6,125e6 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

from scripts.machine import describe, peaks  # noqa: E402
from spafit_exp.core import results  # noqa: E402
from spafit_exp.ops import successive


def timed(fn, repeats: int, sync=lambda: None) -> list[float]:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def ours(weights: torch.Tensor, k: int, repeats: int, threads: int | None, sync=lambda: None) -> list[float]:
    g = torch.Generator(device=weights.device).manual_seed(0)
    saved, successive.CPU_THREADS = successive.CPU_THREADS, threads
    try:
        idx = successive.sample_without_replacement(weights, k, g)  # warm-up, and a sanity check
        assert idx.numel() == k and int(torch.unique(idx).numel()) == k
        return timed(lambda: successive.sample_without_replacement(weights, k, g), repeats, sync)
    finally:
        successive.CPU_THREADS = saved


def host_p(weights: torch.Tensor) -> np.ndarray:
    """What NumPy needs: float64 probabilities on the host."""
    p = weights.detach().cpu().numpy().astype(np.float64)
    p /= p.sum()
    return p


def bench_size(n: int, args, cuda: bool) -> dict:
    k = max(1, round(n * args.fraction))
    row: dict = {"n": n, "k": k}
    weights = torch.randn(n, generator=torch.Generator().manual_seed(0)).square_()
    med = statistics.median
    if args.device in ("auto", "cpu"):
        t = ours(weights, k, args.repeats_ours, threads=1)
        row.update(ours_cpu_s=med(t), ours_cpu_all=t)
        t = ours(weights, k, args.repeats_ours, threads=None)
        row.update(ours_cpu_torch_threads_s=med(t), ours_cpu_torch_threads_all=t)
    if args.skip_numpy_above is None or n <= args.skip_numpy_above:
        prep = timed(lambda: host_p(weights), 1)
        p = host_p(weights)
        np.random.seed(0)
        legacy = timed(lambda: np.random.choice(n, k, replace=False, p=p), args.repeats)
        rng = np.random.default_rng(0)
        modern = timed(lambda: rng.choice(n, k, replace=False, p=p), args.repeats)
        del p
        gc.collect()
        row.update(numpy_prep_s=prep[0], numpy_legacy_s=med(legacy), numpy_legacy_all=legacy,
                   numpy_rng_s=med(modern), numpy_rng_all=modern)
        row["numpy_best_s"] = min(row["numpy_legacy_s"], row["numpy_rng_s"])
        if "ours_cpu_s" in row:
            row["speedup_cpu"] = row["numpy_best_s"] / row["ours_cpu_s"]
    if cuda:
        on_gpu = weights.to("cuda")
        del weights
        gc.collect()
        t = ours(on_gpu, k, args.repeats_ours, threads=None, sync=torch.cuda.synchronize)
        row.update(ours_cuda_s=med(t), ours_cuda_all=t)
        if "numpy_best_s" in row:
            copy = timed(lambda: host_p(on_gpu), args.repeats, torch.cuda.synchronize)
            row["numpy_from_gpu_s"] = med(copy) + row["numpy_best_s"]
            row["speedup_cuda"] = row["numpy_from_gpu_s"] / row["ours_cuda_s"]
        del on_gpu
        torch.cuda.empty_cache()
    return row


COLUMNS = [("n", "n", ","), ("k", "k", ","), ("ours, CPU", "ours_cpu_s", ".3f"),
           ("ours, CPU, torch threads", "ours_cpu_torch_threads_s", ".3f"),
           ("numpy.random.choice", "numpy_legacy_s", ".3f"), ("default_rng().choice", "numpy_rng_s", ".3f"),
           ("speed-up vs faster NumPy", "speedup_cpu", ".1f"), ("ours, CUDA", "ours_cuda_s", ".4f"),
           ("NumPy from GPU", "numpy_from_gpu_s", ".3f"), ("speed-up, CUDA", "speedup_cuda", ".0f")]


def markdown(rows: list[dict], meta: dict) -> str:
    m = meta
    lines = [f"# Weighted sampling without replacement: k = {m['fraction']:.2%} of n", "",
             f"`{m['command']}`  ",
             f"{m['cpu']}; torch {m['torch']} ({m['torch_threads']} threads), numpy {m['numpy']}; "
             f"load average {m['loadavg_start']} at start, {m['loadavg_end']} at end. "
             f"Seconds, median of {m['repeats_ours']} runs (ours) / {m['repeats']} (NumPy).", "",
             "| " + " | ".join(title for title, _, _ in COLUMNS) + " |", "|" + "---:|" * len(COLUMNS)]
    for r in rows:
        cells = ["–" if r.get(key) is None else format(r[key], spec) + ("×" if "speedup" in key else "")
                 for _, key, spec in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "NumPy times exclude preparing p on CPU (`numpy_prep_s` in the JSON); 'NumPy from GPU' "
              "adds the device-to-host copy and the preparation of p to the faster NumPy choice."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="22.7e6,125e6,355e6", help="comma-separated n")
    parser.add_argument("--fraction", type=float, default=0.0008, help="k = fraction * n")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per NumPy sampler")
    parser.add_argument("--repeats-ours", type=int, default=7, help="timed runs of ours (after a warm-up)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU, plus CUDA when available")
    parser.add_argument("--skip-numpy-above", type=float, default=None, help="no NumPy runs above this n")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()
    cuda = args.device in ("auto", "cuda") and torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        parser.error("--device cuda: no CUDA device")
    meta = {"command": " ".join(["python", *sys.argv]), "torch": torch.__version__, "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(), "cpu": describe(peaks()),
            "gpu": torch.cuda.get_device_name() if cuda else None,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], **vars(args)}
    rows = []
    for n in (int(float(s)) for s in args.sizes.split(",")):
        rows.append(bench_size(n, args, cuda))
        print(json.dumps({key: v for key, v in rows[-1].items() if not key.endswith("_all")}), flush=True)
        gc.collect()
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results.write_bench(args.out, "sampling", meta, rows, markdown(rows, meta))


if __name__ == "__main__":
    main()
