"""Step time by method side by side: the SPAFIT family (full_ft, lora II, spafit, full_bitfit) and, on the embedded
model, the masked-gradient methods (stoc_tuning, top_tuning), whose floor is full FT (they need the dense gradient).

Same model, batch, sequence length and process for every method; random weights are fine for timing (the
architecture is what matters). Writes outputs/bench/methods.{json,md}.

    python -m scripts.bench_methods --models minilm,bert_large_cased --batch 16 --seq 128 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from omegaconf import OmegaConf  # noqa: E402

from scripts.machine import describe, peaks  # noqa: E402
from spafit_exp.core.results import write_bench  # noqa: E402
from spafit_exp.inputs.modeling import build_model  # noqa: E402
from spafit_exp.methods import apply_method  # noqa: E402
from spafit_exp.ops.params import count_params  # noqa: E402
from spafit_exp.run.config import compose  # noqa: E402
from spafit_exp.run.spec import resolve  # noqa: E402

# Per model: the SPAFIT split compared (the paper's 8-12-II on 24 layers, the embedded default on 6).
METHODS = {
    "bert_large_cased": ["full_ft", "lora_ii", "spafit_8_12_ii", "full_bitfit"],
    "minilm": ["full_ft", "lora_ii", "spafit", "full_bitfit", "stoc_tuning", "top_tuning"],
}
TRAINER = OmegaConf.create({"lr": 1e-5, "weight_decay": 0.01, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8})


def prepare(overrides: list[str], device: torch.device):
    """The method applied to a random-weight model built on `device` (so state a method keeps per device, such as a
    sampler's generator, lives there), and its optimizer."""
    cfg = compose([*overrides, "model.init=random"])
    torch.manual_seed(0)
    with device:
        spec = resolve(cfg)
        method = apply_method(build_model(spec.model, spec.task), spec.method)
    method.model.to(device).train()
    return cfg, method, method.make_optimizer(TRAINER)


def step_times(method, optimizer, batch: dict, args, device: torch.device) -> list[float]:
    """Seconds of each of `args.steps` training steps (forward, backward, clipping, the method's hook, AdamW) after
    `args.warmup` untimed ones, under bf16 autocast when `args.precision` is bf16; the device is synchronised
    around each step."""
    model = method.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        method.before_step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    return times


def time_method(model_name: str, method: str, args, device: torch.device) -> dict:
    cfg, applied, optimizer = prepare([f"model={model_name}", f"method={method}"], device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, cfg.model.arch.vocab_size, (args.batch, args.seq), generator=g).to(device)
    labels = torch.randint(0, 2, (args.batch,), generator=g).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    times = step_times(applied, optimizer, batch, args, device)
    trainable_n, total_n = count_params(applied.model)
    return {"model": model_name, "method": method, "tag": cfg.method.tag, "trainable": trainable_n, "total": total_n,
            "step_s_median": statistics.median(times), "step_s_all": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="minilm,bert_large_cased")
    parser.add_argument("--methods", default=None, help="comma-separated subset of each model's methods (full_ft and "
                        "lora_ii are always timed: they are the baselines)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()
    device = torch.device(args.device)

    rows = []
    for model_name in args.models.split(","):
        wanted = set(args.methods.split(",")) | {"full_ft", "lora_ii"} if args.methods else None
        for method in [m for m in METHODS[model_name] if wanted is None or m in wanted]:
            row = time_method(model_name, method, args, device)
            rows.append(row)
            print(f"{model_name:18s} {row['tag']:18s} step {row['step_s_median'] * 1000:9.1f} ms", flush=True)
        base = {r["method"]: r["step_s_median"] for r in rows if r["model"] == model_name}
        for r in rows:
            if r["model"] == model_name:
                r["vs_full_ft"] = r["step_s_median"] / base["full_ft"]
                r["vs_lora_ii"] = r["step_s_median"] / base["lora_ii"]

    meta = {"device": str(device), "cpu": describe(peaks()), "torch": torch.__version__,
            "threads": torch.get_num_threads(), **vars(args)}
    lines = [f"# Step time by method ({device}, batch {args.batch}, seq {args.seq}, {args.precision}, "
             f"median of {args.steps} steps)", "",
             f"Machine: {meta['cpu']}.", "",
             "| model | method | trainable | step (ms) | × full_ft | × lora II |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['tag']} | {r['trainable']:,} | {r['step_s_median'] * 1000:.1f} | "
              f"{r['vs_full_ft']:.2f} | {r['vs_lora_ii']:.2f} |" for r in rows]
    write_bench(args.out, "methods", meta, rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
