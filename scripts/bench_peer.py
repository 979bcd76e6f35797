"""Our loop vs the usual Hugging Face Trainer + peft stack, side by side, in one invocation.

Same model, SST-2 rows, method (full FT and LoRA-II r=64 alpha=128), batch size, max length, learning rate, seed
and number of steps. The reference is written the way the transformers examples do it: `datasets.map`
tokenization, `DataCollatorWithPadding`, default `TrainingArguments` (AdamW, linear schedule, no warm-up, no
weight decay, clipping at 1.0), peft's `get_peft_model`, and a final `trainer.evaluate` on the same dev rows our
loop scores (examples/s counts training time only, for both). Our loop runs with its defaults (unpadded encoder,
see spafit_exp/ops/unpad.py); `--padded` adds it with `trainer.unpad=false`. Every configuration runs in a fresh child
process so its peak RSS is its own. Reports examples/s, step time p50/p90, peak RSS (and peak GPU memory), final loss.
`--quality` adds the dev-accuracy cost of bf16 on SST-2 (4,000 rows, 1 epoch) next to its speed.

    python -m scripts.bench_peer --rows 800 --batch 16
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time

from scripts.machine import describe, peaks  # noqa: E402
from spafit_exp.core.results import write_bench  # noqa: E402

LORA_II = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _gpu_peak_mb():
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _percentiles(times: list[float]) -> dict:
    qs = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return {"step_s_p50": statistics.median(times), "step_s_p90": qs[8]}


def ours(spec: dict) -> dict:
    """Our loop through the public pieces the CLI uses (app.train_and_record minus the results file)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from spafit_exp.engine.loop import train
    from spafit_exp.inputs.data import load_task_data
    from spafit_exp.inputs.modeling import build_tokenizer
    from spafit_exp.run.app import prepare as build_prepared
    from spafit_exp.run.config import compose
    from spafit_exp.run.spec import resolve

    overrides = [f"model={spec['model']}", "task=sst2", f"method={spec['method']}",
                 *([f"trainer.lr={spec['lr']}"] if spec.get("lr") else []),  # None: the method's own rate
                 f"trainer.batch_size={spec['batch']}", f"trainer.max_len={spec['max_len']}", "trainer.epochs=1",
                 f"trainer.max_train_samples={spec['rows']}", f"trainer.max_eval_samples={spec['eval_rows']}",
                 "trainer.weight_decay=0.0", "trainer.warmup_ratio=0.0", f"trainer.seed={spec['seed']}",
                 f"trainer.precision={spec['precision']}", "trainer.log_every=10", "trainer.checkpoint_every=0",
                 "trainer.eval_train_samples=0"]  # the reference does not evaluate: keep ours' eval negligible
    if spec["model"] != "minilm":
        overrides.append("model.init=random")
    overrides += spec.get("extra", []) + (["trainer.unpad=false"] if spec.get("padded") else [])
    cfg = compose(overrides)
    run_spec = resolve(cfg)
    set_seed(cfg.trainer.seed)
    data = load_task_data(run_spec, build_tokenizer(run_spec.model))
    method = build_prepared(run_spec)
    accelerator = Accelerator(mixed_precision={"fp32": "no", "bf16": "bf16"}[spec["precision"]])
    start = time.perf_counter()
    result = train(run_spec, method, data, accelerator)
    wall = time.perf_counter() - start
    tokens = sum(len(row["input_ids"]) for row in data.train)  # real tokens of the one epoch
    flops = {"flops_per_token": _flops_per_token(cfg, method, data)} if spec.get("count_flops") else {}
    return {"examples_per_s": result.train_samples / result.train_seconds, **_percentiles(result.step_seconds),
            "tokens_per_s": tokens / result.train_seconds, **flops,
            "final_loss": result.losses[-1][1], "dev": result.best["dev"], "train_s": result.train_seconds,
            "wall_s": wall, "steps": result.steps, "optimizer_state_bytes": result.optimizer_state_bytes,
            "trainable": method.counts().trainable}


def _flops_per_token(cfg, method, data) -> float:
    """Model FLOPs of one training forward + backward per real token (torch's FlopCounterMode on a batch of the
    run's rows, the run's unpadded path with exact sizes: bucket filler rows are not model work)."""
    batch = data.collate(data.train[: cfg.trainer.batch_size])
    return train_flops(method.model, batch, cfg.trainer.unpad) / int(batch["attention_mask"].sum())


def train_flops(model, batch: dict, unpadded: bool = True) -> int:
    """Model FLOPs of one training forward + backward of `batch` (FlopCounterMode; frozen weights skip their
    weight-gradient GEMM). Unpadded with exact sizes, the padded slots are not counted as work."""
    from torch.utils.flop_counter import FlopCounterMode

    from spafit_exp.ops import unpad

    model.train()
    buckets, unpad.BUCKETS_PER_OCTAVE = unpad.BUCKETS_PER_OCTAVE, 1 << 30
    try:
        with unpad.applied(model, unpadded), FlopCounterMode(display=False) as counter:
            model(**batch).loss.backward()
    finally:
        unpad.BUCKETS_PER_OCTAVE = buckets
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def trainer_peft(spec: dict) -> dict:
    """The reference stack, as in transformers' run_glue.py + peft's examples."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from spafit_exp.inputs.data import read_split
    from spafit_exp.inputs.modeling import weights_source
    from spafit_exp.run.config import compose
    from spafit_exp.run.spec import resolve

    run_spec = resolve(compose([f"model={spec['model']}", "task=sst2"]))
    set_seed(spec["seed"])
    source = weights_source(run_spec.model)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    def tokenized(split: str, rows: int) -> Dataset:
        raw = read_split(run_spec.data, run_spec.task, split, rows)
        ds = Dataset.from_dict({"sentence": raw.texts[0], "label": raw.labels})
        return ds.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=spec["max_len"]), batched=True,
                      remove_columns=["sentence"])

    ds, dev = tokenized("train", spec["rows"]), tokenized("dev", spec["eval_rows"])
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, trust_remote_code=False)
    if spec["method"] == "lora_ii":
        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=64, lora_alpha=128, lora_dropout=0.0,
                                                 target_modules=LORA_II))

    class StepTimes(TrainerCallback):
        times: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.start)

    def accuracy(prediction) -> dict:
        from spafit_exp.inputs.metrics import compute  # sklearn: evaluate.load("glue") needs the hub

        return compute(["accuracy"], prediction.predictions.argmax(-1), prediction.label_ids)

    timer = StepTimes()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=spec["batch"], learning_rate=spec["lr"],
                                 num_train_epochs=1, seed=spec["seed"], report_to=[], logging_steps=10,
                                 save_strategy="no", disable_tqdm=True, bf16=spec["precision"] == "bf16",
                                 use_cpu=not torch.cuda.is_available())
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tokenizer),
                          callbacks=[timer], compute_metrics=accuracy)
        start = time.perf_counter()
        out = trainer.train()
        scores = trainer.evaluate(dev)  # run_glue evaluates at the end, as our loop does
        wall = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"examples_per_s": spec["rows"] / out.metrics["train_runtime"], **_percentiles(timer.times),
            "final_loss": losses[-1] if losses else out.training_loss, "dev": {"accuracy": scores["eval_accuracy"]},
            "train_s": out.metrics["train_runtime"], "wall_s": wall, "steps": trainer.state.global_step}


def _child(fn_name: str, spec: dict, queue) -> None:
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    row = globals()[fn_name](spec)
    row.update(peak_rss_mb=_peak_rss_mb(), peak_gpu_mb=_gpu_peak_mb(), threads=torch.get_num_threads())
    queue.put(row)


def run_isolated(fn_name: str, spec: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn_name, spec, queue))
    proc.start()
    row = queue.get()
    proc.join()
    stack = "trainer+peft" if fn_name == "trainer_peft" else "ours" + (" (padded)" if spec.get("padded") else "")
    return {"stack": stack, **spec, **row}


def _median_row(runs: list[dict]) -> dict:
    """The run with the median examples/s, with every repeat's examples/s kept alongside."""
    ordered = sorted(runs, key=lambda r: r["examples_per_s"])
    row = dict(ordered[len(ordered) // 2])
    row["examples_per_s_all"] = [r["examples_per_s"] for r in runs]
    return row


def _achieved(rows: list[dict], measured: dict[str, float]) -> None:
    """Model FLOP/s of each row and its fraction of the matmul peak of its precision. The Trainer's rows use our
    count for the same method (same model, same real tokens: padding is not model work) and their own tokens/s."""
    counted = {r["method"]: r for r in rows if "flops_per_token" in r}
    for r in rows:
        ours = counted[r["method"]]
        tokens_per_s = r.get("tokens_per_s", r["examples_per_s"] * ours["tokens_per_s"] / ours["examples_per_s"])
        r["achieved_flops"] = ours["flops_per_token"] * tokens_per_s
        r["fraction_of_peak"] = r["achieved_flops"] / measured[r["precision"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--methods", default="full_ft,lora_ii")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats; medians are reported")
    parser.add_argument("--bf16", action="store_true", help="also time our loop under bf16 autocast")
    parser.add_argument("--padded", action="store_true", help="also time our loop with trainer.unpad=false")
    parser.add_argument("--quality", action="store_true", help="dev accuracy of fp32 vs bf16 on 4,000 SST-2 rows")
    parser.add_argument("--subset", action="store_true",
                        help="optimizer-state bytes and peak RSS of a 0.1%% random subset run vs full FT (ours)")
    parser.add_argument("--overhead", action="store_true",
                        help="per-step methods (stoc/top/random tuning) vs full FT, ours, real unpadded runs")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()

    lr = {"full_ft": 5e-5, "lora_ii": 5e-4}
    measured = peaks()
    rows = []
    for method in [m for m in args.methods.split(",") if m]:  # --methods "": only the other sections
        spec = {"model": args.model, "method": method, "rows": args.rows, "eval_rows": 200, "batch": args.batch,
                "max_len": args.max_len, "seed": args.seed, "lr": lr[method], "precision": "fp32"}
        runs = {"trainer_peft": [], "ours": []}
        for _ in range(args.repeats):  # interleaved, so slow phases of a noisy machine hit both stacks
            for fn in runs:  # ours also counts its model FLOPs per real token (after its timed run)
                runs[fn].append(run_isolated(fn, {**spec, "count_flops": fn == "ours"}))
                print(json.dumps(runs[fn][-1]), flush=True)
        rows += [_median_row(r) for r in runs.values()]
        if args.padded:  # the same loop with the plain padded HF forward: what unpadding alone buys
            rows.append(run_isolated("ours", {**spec, "padded": True, "count_flops": True}))
            print(json.dumps(rows[-1]), flush=True)
        if args.bf16:
            rows.append(run_isolated("ours", {**spec, "precision": "bf16", "count_flops": True}))
            print(json.dumps(rows[-1]), flush=True)
    quality = []
    if args.quality:
        for precision in ("fp32", "bf16"):
            spec = {"model": args.model, "method": "full_ft", "rows": 4000, "eval_rows": 872, "batch": 16,
                    "max_len": args.max_len, "seed": args.seed, "lr": 5e-5, "precision": precision}
            quality.append(run_isolated("ours", spec))
            print(json.dumps(quality[-1]), flush=True)

    memory = []
    if args.subset:
        base = {"model": args.model, "rows": args.rows, "eval_rows": 32, "batch": args.batch, "max_len": args.max_len,
                "seed": args.seed, "precision": "fp32"}
        memory.append(run_isolated("ours", {**base, "method": "full_ft", "lr": 5e-5}))
        for weight_grad in ("sampled", "dense"):  # Linear weight gradients at the k entries only, or dense + mask
            memory.append(run_isolated("ours", {**base, "method": "subset", "lr": 1e-3, "weight_grad": weight_grad,
                                                "extra": ["selector=random", "selector.fraction=0.001",
                                                          "decoder.pretune=false", f"method.weight_grad={weight_grad}"]}))
        for row in memory:
            print(json.dumps(row), flush=True)

    overhead = []
    if args.overhead:  # interleaved repeats, medians: the per-step selection's cost on real batches
        base = {"model": args.model, "rows": args.rows, "eval_rows": 32, "batch": args.batch, "max_len": args.max_len,
                "seed": args.seed, "precision": "fp32", "lr": None}
        methods = ["full_ft", "stoc_tuning", "top_tuning", "random_tuning"]
        runs = {m: [] for m in methods}
        for _ in range(args.repeats):
            for method in methods:
                runs[method].append(run_isolated("ours", {**base, "method": method}))
                print(json.dumps(runs[method][-1]), flush=True)
        overhead = [_median_row(r) for r in runs.values()]

    base = {r["method"]: r for r in rows if r["stack"] == "trainer+peft"}
    _achieved(rows, measured)
    lines = [f"# Our loop vs Trainer + peft ({args.model}, SST-2 {args.rows} rows, batch {args.batch}, "
             f"max_len {args.max_len}, seed {args.seed})", "", f"Machine: {describe(measured)}.", "",
             "Achieved GFLOP/s: the model's FLOPs per real token (torch's FlopCounterMode on our unpadded forward + "
             "backward) × real tokens/s; padded slots are not counted as work, for either stack.", "",
             "| method | stack | precision | examples/s | × Trainer | step p50 (ms) | step p90 (ms) | peak RSS (MB) "
             "| final loss | dev acc (200) | achieved GFLOP/s | of peak |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["examples_per_s"] / base[r["method"]]["examples_per_s"]
        lines.append(f"| {r['method']} | {r['stack']} | {r['precision']} | {r['examples_per_s']:.1f} | {ratio:.2f} | "
                     f"{r['step_s_p50'] * 1000:.0f} | {r['step_s_p90'] * 1000:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['final_loss']:.4f} | {r['dev']['accuracy']:.3f} | {r['achieved_flops'] / 1e9:.1f} | "
                     f"{r['fraction_of_peak']:.0%} |")
    if quality:
        lines += ["", "## bf16 cost (full FT, SST-2 4,000 rows, 1 epoch, dev 872 rows)", "",
                  "| precision | examples/s | dev accuracy |", "|---|---:|---:|"]
        lines += [f"| {q['precision']} | {q['examples_per_s']:.1f} | {q['dev']['accuracy']:.4f} |" for q in quality]
    if memory:
        full_bytes = memory[0]["optimizer_state_bytes"]
        full_step = memory[0]["step_s_p50"]
        lines += ["", "## Fixed subset vs full FT (ours: random subset of 0.1% of the encoder, unpadded fp32)", "",
                  "| method | weight grads | trainable | optimizer state (MB) | × full FT | peak RSS (MB) | examples/s "
                  "| step p50 (ms) | step × full FT |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {m['method']} | {m.get('weight_grad', 'dense')} | {m['trainable']:,} | "
                  f"{m['optimizer_state_bytes'] / 2**20:.2f} | {m['optimizer_state_bytes'] / full_bytes:.4f} | "
                  f"{m['peak_rss_mb']:.0f} | {m['examples_per_s']:.1f} | {m['step_s_p50'] * 1000:.0f} | "
                  f"{m['step_s_p50'] / full_step:.2f} |" for m in memory]
    if overhead:
        full = overhead[0]["examples_per_s"]
        lines += ["", f"## Per-step selection overhead (ours, SST-2 {args.rows} rows, unpadded fp32, recommended rates, "
                      f"median of {args.repeats})", "",
                  "| method | examples/s | × full FT | step p50 (ms) | final loss |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['examples_per_s']:.1f} | {r['examples_per_s'] / full:.2f} | "
                  f"{r['step_s_p50'] * 1000:.0f} | {r['final_loss']:.4f} |" for r in overhead]
    meta = {"args": vars(args), "machine": describe(measured), "peaks": measured, "quality": quality, "memory": memory,
            "overhead": overhead}
    write_bench(args.out, "peer", meta, rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
