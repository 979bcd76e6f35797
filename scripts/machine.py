"""The measured matmul peaks of the machine a benchmark runs on, next to the CPU model and ISA features
(`results.cpu_summary`): every benchmark's header, so achieved FLOP/s can be read as a fraction of what the
same cores do (compare only numbers measured on one machine, in one run)."""

from __future__ import annotations

import time

import torch

from spafit_exp.core.results import cpu_summary


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` size x size x size torch.mm (after one warm-up) on this process's threads."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peaks() -> dict[str, float]:
    """fp32 and bf16 matmul peaks (FLOP/s), measured now (about a second)."""
    return {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}


def describe(measured: dict[str, float]) -> str:
    """The header line of every benchmark: CPU model, ISA features, cores, torch threads and the measured peaks."""
    return (f"{cpu_summary()}, {torch.get_num_threads()} torch threads; 2048³ matmul peak "
            + ", ".join(f"{name} {value / 1e9:.1f} GFLOP/s" for name, value in measured.items()))
