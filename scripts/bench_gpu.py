"""One training step of full FT, LoRA-II, SPAFIT-8-12-II and Stochastic Tuning on the BERT-large architecture, and
Stochastic Tuning's sampler, on a GPU (`make bench-gpu`, a few minutes on one H100/H200-class device).

Training step: random weights built on the device from conf/model/bert_large_cased.yaml (24 layers, hidden 1024,
16 heads, intermediate 4096), one random batch (batch 32, max length 128, row lengths uniform in [max/8, max], the
longest at max), timed by bench_methods.step_times (forward, backward, clipping, the method's hook, AdamW; median of
`--steps` after `--warmup`, torch.cuda.synchronize around each) in fp32 and under bf16 autocast, through the padded
forward (`trainer.unpad=false`) and the unpadded encoder (spafit_exp/ops/unpad.py). Achieved TFLOP/s: the model FLOPs of
one training step on the batch's real tokens (bench_peer.train_flops: FlopCounterMode, so frozen weights skip their
weight-gradient GEMM; padded slots are not counted as work) / the median step; share of the device's dense peak for
the dtype (PEAKS; an unlisted device: n/a). Peak memory: torch.cuda.max_memory_allocated per configuration (n/a on
CPU). Sampler: bench_sampling.bench_size (ours on the device vs NumPy, charged with the copy to the host on a GPU).

Writes the Markdown table to `--out` and the rows to the same name with .json. Without a GPU it refuses unless
`--tiny` (a CPU-sized check: 3 layers, hidden 64, 1e5 sampled elements) or `--device cpu` is given.

    python -m scripts.bench_gpu                          # the GPU run: outputs/bench/gpu.md
    python -m scripts.bench_gpu --tiny --device cpu      # seconds, any machine (the test runs this)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import statistics
import sys
from pathlib import Path

import torch

from scripts.bench_methods import prepare, step_times
from scripts.bench_peer import train_flops
from scripts.bench_sampling import bench_size
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.results import cpu_summary, write_bench
from spafit_exp.ops import unpad
from spafit_exp.ops.params import count_params

# Row name -> method config; the SPAFIT split is the paper's 8-12-II on 24 layers, 0-1-II on the tiny 3 layers.
METHODS = {"full_ft": ["method=full_ft"], "lora_ii": ["method=lora_ii"], "spafit": ["method=spafit_8_12_ii"],
           "stoc_tuning": ["method=stoc_tuning"]}
TINY_SPAFIT = ["method.n1=0", "method.n2=1"]
TINY_ARCH = ["model.arch.num_hidden_layers=3", "model.arch.hidden_size=64", "model.arch.num_attention_heads=4",
             "model.arch.intermediate_size=128"]
PROFILES = {"full": {"batch": 32, "seq": 128, "steps": 20, "warmup": 5, "sizes": "125e6,355e6", "repeats": 3},
            "tiny": {"batch": 4, "seq": 32, "steps": 2, "warmup": 1, "sizes": "1e5", "repeats": 1}}
# Dense peak TFLOP/s (NVIDIA data sheets, no sparsity); the first entry whose fragments are all in the device name
# counts, None: a part with other peaks (n/a). "fp32" is the CUDA-core rate: fp32 matmuls run on tensor cores
# (tf32) only when torch's float32 matmul precision allows it (the project leaves it at "highest").
PEAKS = [(("NVL",), None), (("H200",), {"bf16": 989, "tf32": 494, "fp32": 67}),
         (("H100", "HBM3"), {"bf16": 989, "tf32": 494, "fp32": 67}),  # SXM: "NVIDIA H100 80GB HBM3"
         (("H100", "SXM"), {"bf16": 989, "tf32": 494, "fp32": 67}),
         (("A100",), {"bf16": 312, "tf32": 156, "fp32": 19.5})]


def device_peak(name: str, dtype: str) -> float | None:
    """FLOP/s of `name`'s dense peak for `dtype` (bf16 | fp32), None for a device not in PEAKS."""
    key = "tf32" if dtype == "fp32" and torch.get_float32_matmul_precision() != "highest" else dtype
    for fragments, peaks in PEAKS:
        if all(f in name for f in fragments):
            return peaks[key] * 1e12 if peaks else None
    return None


def random_batch(vocab: int, batch: int, seq: int, device: torch.device) -> dict:
    """Rows of random length in [seq/8, seq] (the first at seq, so the padded batch is seq long), padding id 0."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(max(1, seq // 8), seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    ids = torch.randint(1000, vocab, (batch, seq), generator=g) * mask
    labels = torch.randint(0, 2, (batch,), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def bench_method(name: str, overrides: list[str], args, device: torch.device, peak_of) -> list[dict]:
    """The method's rows: fp32 and bf16, each padded and unpadded, on one model and optimizer."""
    cfg, method, optimizer = prepare(overrides, device)
    batch = random_batch(cfg.model.arch.vocab_size, args.batch, args.seq, device)
    flops = train_flops(method.model, batch)
    trainable, _ = count_params(method.model)
    rows = []
    for precision in ("fp32", "bf16"):
        for padded in (True, False):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with unpad.applied(method.model, not padded):
                times = step_times(method, optimizer, batch, argparse.Namespace(**vars(args), precision=precision),
                                   device)
            step = statistics.median(times)
            peak = peak_of(precision)
            rows.append({"method": name, "tag": cfg.method.tag, "dtype": precision,
                         "padding": "padded" if padded else "unpadded", "trainable": trainable, "step_s": step,
                         "step_s_all": times, "samples_per_s": args.batch / step, "train_flops": flops,
                         "tflops": flops / step / 1e12, "share_of_peak": flops / step / peak if peak else None,
                         "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20
                         if device.type == "cuda" else None})
            print(f"{name:12s} {precision} {rows[-1]['padding']:8s} step {step * 1000:9.2f} ms", flush=True)
    del method, optimizer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def sampler_rows(args, device: torch.device) -> list[dict]:
    """bench_sampling's measurement per size: ours on `device` (CPU: one thread) vs the faster NumPy sampler."""
    options = argparse.Namespace(fraction=0.0008, device=device.type, repeats=args.repeats,
                                 repeats_ours=max(3, args.repeats), skip_numpy_above=None)
    rows = []
    for n in (int(float(s)) for s in args.sizes.split(",")):
        r = bench_size(n, options, device.type == "cuda")
        ours, numpy = ((r["ours_cuda_s"], r["numpy_from_gpu_s"]) if device.type == "cuda"
                       else (r["ours_cpu_s"], r["numpy_best_s"]))
        rows.append({**r, "ours_s": ours, "numpy_s": numpy, "speedup": numpy / ours})
        print(f"sampler n={n:,} ours {ours:.4f} s numpy {numpy:.4f} s", flush=True)
    return rows


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(rows: list[dict], sampled: list[dict], meta: dict) -> str:
    m = meta
    lines = [f"# Training step and sampler on {m['device_name']}", "",
             f"`{m['command']}`  ", f"{m['device_name']} ({m['device']}), torch {m['torch']}, {m['date']}. "
             f"Model: {m['model']} (random weights); batch {m['batch']}, max length {m['seq']}, real tokens "
             f"{m['real_share']:.0%} of the padded slots; median of {m['steps']} steps after {m['warmup']}. "
             f"Peak dense TFLOP/s: {m['peaks']}.", "",
             "| method | variant | dtype | padding | trainable | step (ms) | samples/s | TFLOP/s | of peak "
             "| peak memory (MiB) |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['tag']} | {r['dtype']} | {r['padding']} | {r['trainable']:,} | "
              f"{r['step_s'] * 1000:.2f} | {r['samples_per_s']:.1f} | {r['tflops']:.3g} | "
              f"{_num(r['share_of_peak'], '.0%')} | {_num(r['peak_memory_mib'], '.0f')} |" for r in rows]
    lines += ["", "TFLOP/s: model FLOPs on the real tokens (FlopCounterMode) / step time; padded slots are not work.",
              "", f"## Sampler: k = 0.08% of n, ours on {m['device']} vs NumPy", "",
              "| sampler n | k | ours (s) | NumPy (s) | speed-up |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['n']:,} | {r['k']:,} | {r['ours_s']:.3g} | {r['numpy_s']:.3g} | {r['speedup']:.3g}× |"
              for r in sampled]
    note = ("NumPy from the GPU: the device-to-host copy, the float64 probabilities and the faster of "
            "numpy.random.choice / default_rng().choice." if m["device"] == "cuda" else
            "Ours on one CPU thread; NumPy: the faster of numpy.random.choice / default_rng().choice, p prepared.")
    return "\n".join([*lines, "", note]) + "\n"


def resolve(args) -> torch.device:
    """The device to run on; ConfigError for a run this machine cannot or should not do."""
    if not args.out.endswith(".md"):
        raise ConfigError(f"--out {args.out}: must name a .md file (the rows go next to it as .json)")
    for key in ("batch", "seq", "steps", "warmup", "repeats"):
        if getattr(args, key) is not None and getattr(args, key) < (0 if key == "warmup" else 1):
            raise ConfigError(f"--{key} {getattr(args, key)}: must be {'>= 0' if key == 'warmup' else '>= 1'}")
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        raise ConfigError("--device cuda: no CUDA device here")
    if args.device == "auto" and not cuda and not args.tiny:
        raise ConfigError("--device auto: no GPU here; --tiny runs a CPU-sized check, --device cpu the full sizes")
    return torch.device("cuda" if args.device != "cpu" and cuda else "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: 3 layers, hidden 64, sampler at 1e5")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", default="outputs/bench/gpu.md")
    for key in ("batch", "seq", "steps", "warmup", "repeats"):
        parser.add_argument(f"--{key}", type=int, default=None, help="default: the profile's (full / --tiny)")
    parser.add_argument("--sizes", default=None, help="sampler sizes, comma-separated n")
    args = parser.parse_args(argv)
    try:
        device = resolve(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, value in PROFILES["tiny" if args.tiny else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_summary()
    arch = ["model=bert_large_cased", *(TINY_ARCH if args.tiny else [])]
    rows = []
    for method, overrides in METHODS.items():
        extra = TINY_SPAFIT if args.tiny and method == "spafit" else []
        rows += bench_method(method, [*arch, *overrides, *extra], args, device, lambda d: device_peak(name, d))
    sampled = sampler_rows(args, device)

    mask = random_batch(2000, args.batch, args.seq, torch.device("cpu"))["attention_mask"]
    peaks = {d: device_peak(name, d) for d in ("bf16", "fp32")}
    meta = {**vars(args), "command": " ".join(["python", *sys.argv[:1], *(sys.argv[1:] if argv is None else argv)]),
            "device": device.type, "device_name": name, "torch": torch.__version__,
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "model": "BERT-large architecture, 3 layers x hidden 64 (--tiny)" if args.tiny else "BERT-large architecture",
            "real_share": float(mask.float().mean()),
            "peaks": ", ".join(f"{d} {_num(p and p / 1e12, 'g')}" for d, p in peaks.items())}
    out = Path(args.out)
    write_bench(out.parent, out.stem, meta, rows + sampled, markdown(rows, sampled, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
