"""Weighted sampling without replacement: ours (torch, on the weights' device) vs NumPy, same weights, one run.

Sizes default to the embedded MiniLM (22.7M), roberta-base (125M) and roberta-large (355M) parameter counts;
k = 0.08% of n (BitFit-sized sub-networks). On CUDA, ours runs on the GPU and NumPy's time includes the
device-to-host copy it needs. Writes outputs/bench/sampling.{json,md}.

    python scripts/bench_sampling.py --sizes 22.7e6,125e6 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spafit_exp.sampling import sample_without_replacement  # noqa: E402


def timed(fn, repeats: int, sync=lambda: None) -> list[float]:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="22.7e6,125e6,355e6")
    parser.add_argument("--fraction", type=float, default=0.0008)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-numpy-above", type=float, default=float("inf"), help="n above which NumPy is not run")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    rows = []
    for n in (int(float(s)) for s in args.sizes.split(",")):
        k = max(1, int(n * args.fraction))
        g = torch.Generator(device=device).manual_seed(0)
        weights = torch.randn(n, device=device, generator=g).square_()  # I^2-like: heavy-ish tail
        ours = timed(lambda: sample_without_replacement(weights, k, g), args.repeats, sync)
        row = {"n": n, "k": k, "device": str(device), "ours_s": statistics.median(ours), "ours_all": ours}
        if n <= args.skip_numpy_above:
            def host_p():
                w = weights.detach().to("cpu", torch.float64).numpy()  # the copy NumPy needs
                return w / w.sum()

            legacy = timed(lambda: np.random.choice(n, k, replace=False, p=host_p()), args.repeats)
            generator = np.random.default_rng(0)
            modern = timed(lambda: generator.choice(n, k, replace=False, p=host_p()), args.repeats)
            row.update(numpy_legacy_s=statistics.median(legacy), numpy_rng_s=statistics.median(modern))
            row["speedup_vs_faster_numpy"] = min(row["numpy_legacy_s"], row["numpy_rng_s"]) / row["ours_s"]
        rows.append(row)
        print(json.dumps({key: v for key, v in row.items() if not key.endswith("_all")}), flush=True)
        weights = None  # free it before the next size

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(), **vars(args)}
    (out / "sampling.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# Sampling k = {args.fraction:.2%} of n without replacement ({device}, median of {args.repeats})", "",
             "| n | k | ours (s) | numpy.random.choice (s) | default_rng().choice (s) | speed-up vs faster NumPy |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['k']:,} | {r['ours_s']:.3f} | {r.get('numpy_legacy_s', float('nan')):.3f} | "
                     f"{r.get('numpy_rng_s', float('nan')):.3f} | {r.get('speedup_vs_faster_numpy', float('nan')):.1f}× |")
    (out / "sampling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
