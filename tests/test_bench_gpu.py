"""`make bench-gpu` (scripts/bench_gpu.py) without a GPU: its CPU-sized run (`--tiny --device cpu`) writes a row per
method x dtype x padding and the sampler rows, with positive numbers; a run the machine cannot do is refused in
one line, exit 2, nothing written; the device peaks give the share of peak for known GPUs only."""

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

from spafit_exp import REPO_ROOT

METHODS = ["full_ft", "lora_ii", "spafit", "stoc_tuning"]  # written out: a method the script drops fails here
EXPECTED = {(m, d, p) for m in METHODS for d in ("fp32", "bf16") for p in ("padded", "unpadded")}


def table_rows(markdown: str, first_header: str) -> list[dict]:
    """The rows of the Markdown table whose header starts with `first_header`, as {column: cell}."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("×"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_gpu") / "gpu.md"
    # As `make bench-gpu` runs it: a script, its package found through the editable install.
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_gpu", "--tiny", "--device", "cpu", "--out", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_tiny_cpu_run_has_every_method_dtype_and_padding(tiny_run):
    markdown = tiny_run.read_text()
    rows = table_rows(markdown, "method")
    assert {(r["method"], r["dtype"], r["padding"]) for r in rows} == EXPECTED
    assert len(rows) == len(EXPECTED)
    for r in rows:
        for column in ("step (ms)", "samples/s", "TFLOP/s", "trainable"):
            assert number(r[column]) > 0, (r, column)
        assert r["of peak"] == "n/a" and r["peak memory (MiB)"] == "n/a"  # a CPU has no entry in the peak table
    variants = {r["method"]: r["variant"] for r in rows}
    assert variants["spafit"] == "spafit-0-1-II" and variants["lora_ii"] == "lora-II-r64"
    assert "torch " + torch.__version__ in markdown and "(cpu)" in markdown


def test_tiny_cpu_run_has_the_sampler_rows(tiny_run):
    rows = table_rows(tiny_run.read_text(), "sampler n")
    assert [number(r["sampler n"]) for r in rows] == [100_000]
    for r in rows:
        for column in ("k", "ours (s)", "NumPy (s)", "speed-up"):
            assert number(r[column]) > 0, (r, column)
    saved = json.loads(tiny_run.with_suffix(".json").read_text())
    assert len(saved["rows"]) == len(EXPECTED) + 1 and saved["meta"]["device"] == "cpu"


@pytest.fixture(scope="module")
def bench_gpu():
    return importlib.import_module("scripts.bench_gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="refusals of a machine without a GPU")
@pytest.mark.parametrize("argv,key", [([], "--device auto"), (["--device", "cuda"], "--device cuda"),
                                      (["--tiny", "--out", "gpu.txt"], "--out"),
                                      (["--tiny", "--device", "cpu", "--steps", "0"], "--steps")])
def test_refused_in_one_line_nothing_written(bench_gpu, tmp_path, capsys, argv, key):
    argv = argv if "--out" in argv else [*argv, "--out", str(tmp_path / "gpu.md")]
    assert bench_gpu.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {key}") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_peak_of_known_devices_only(bench_gpu):
    assert bench_gpu.device_peak("NVIDIA H200", "bf16") == 989e12
    assert bench_gpu.device_peak("NVIDIA H100 80GB HBM3", "fp32") == 67e12
    assert bench_gpu.device_peak("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert bench_gpu.device_peak("NVIDIA H100 PCIe", "bf16") is None  # other parts, other peaks
    assert bench_gpu.device_peak("NVIDIA H200 NVL", "bf16") is None
    assert bench_gpu.device_peak("AMD EPYC 7B13", "fp32") is None
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # fp32 matmuls on tensor cores: the tf32 peak
    try:
        assert bench_gpu.device_peak("NVIDIA H200", "fp32") == 494e12
    finally:
        torch.set_float32_matmul_precision(saved)
