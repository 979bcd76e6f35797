"""How much of the CPU's matmul peak our training loop reaches, fp32 and bf16.

Peak: the best of a few large square matmuls (torch.mm, `--size`) per dtype on the same cores. Achieved: model
FLOPs per real token of one training forward + backward (torch's FlopCounterMode on the run's own unpadded batch;
frozen weights skip their weight-gradient GEMM, so LoRA and SPAFIT count less than full FT) × real tokens/s of a
real SST-2 run through our loop (`trainer.precision`), each configuration in a fresh process. Reports the CPU
model and the ISA features that decide the bf16 speed (AVX512-BF16, AMX). Writes outputs/bench/flops.{json,md}.

    python -m scripts.bench_flops --rows 800 --methods full_ft,lora_ii,spafit
"""

from __future__ import annotations

import argparse
import sys

import torch

from scripts.bench_peer import run_isolated  # noqa: E402
from scripts.machine import describe, matmul_peak  # noqa: E402
from spafit_exp.core.results import write_bench  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--methods", default="full_ft,lora_ii,spafit")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--size", type=int, default=2048, help="matmul side for the peak")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args(argv)

    peaks = {p: matmul_peak(DTYPES[p], args.size) for p in args.precisions.split(",")}
    rows = []
    for method in args.methods.split(","):
        for precision in peaks:
            spec = {"model": "minilm", "method": method, "rows": args.rows, "eval_rows": 32, "batch": args.batch,
                    "max_len": 128, "seed": 1, "lr": None, "precision": precision, "count_flops": True}
            row = run_isolated("ours", spec)
            row["achieved_flops"] = row["flops_per_token"] * row["tokens_per_s"]
            row["fraction_of_peak"] = row["achieved_flops"] / peaks[precision]
            rows.append(row)
            print(f"{method} {precision}: {row['achieved_flops'] / 1e9:.1f} GFLOP/s "
                  f"({row['fraction_of_peak']:.0%} of peak)", flush=True)

    machine = describe(peaks)
    lines = [f"# Achieved vs peak FLOP/s (embedded MiniLM, SST-2 {args.rows} rows, batch {args.batch}, unpadded)", "",
             f"Machine: {machine}; torch {torch.__version__} (peak = best of five {args.size}³ matmuls).", "",
             "| method | precision | GFLOP per real token (train) | tokens/s | examples/s | achieved GFLOP/s "
             "| of peak |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['precision']} | {r['flops_per_token'] / 1e9:.3f} | {r['tokens_per_s']:.0f} | "
              f"{r['examples_per_s']:.1f} | {r['achieved_flops'] / 1e9:.1f} | {r['fraction_of_peak']:.0%} |"
              for r in rows]
    meta = {"cpu": machine, "peaks": peaks, "command": "python -m scripts.bench_flops " + " ".join(sys.argv[1:])}
    write_bench(args.out, "flops", meta, rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
