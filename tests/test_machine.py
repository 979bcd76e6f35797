"""scripts.machine: every benchmark's header names the CPU, its ISA features and the measured matmul peaks."""

import math

import torch

from scripts.machine import describe, matmul_peak
from spafit_exp.core.results import cpu_summary


def test_matmul_peak_is_a_positive_rate_and_the_header_names_cpu_and_peaks():
    fp32 = matmul_peak(torch.float32, size=128, repeats=2)
    assert math.isfinite(fp32) and fp32 > 1e6  # FLOP/s, not seconds
    line = describe({"fp32": fp32, "bf16": 2.5e11})
    assert line.startswith(cpu_summary())
    assert f"fp32 {fp32 / 1e9:.1f} GFLOP/s" in line and "bf16 250.0 GFLOP/s" in line
