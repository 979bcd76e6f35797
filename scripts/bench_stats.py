"""Gradient statistics (subset paper eq. 2): one forward/backward per example (`sq_grad_sum_loop`, the code before
issue 17) vs per-example gradients computed a chunk at a time (`spafit_exp.ops.persample.sq_grad_sum`, what the
selectors run), on the embedded MiniLM with its pretrained weights.

Two statistics, as `downstream_sqgrad` and `pretrain_sqgrad` compute them: the task loss on the first `--rows`
training rows, and the MLM loss on the first `--paragraphs` WikiText paragraphs that have a masked token
(the MLM model built like `mlm_model_like`). Both paths get the same rows and must agree (relative error:
max |batched - loop| / max |loop|; plus the overlap of their top-k sets, k = the BitFit size). One timed run of
each path, after a one-chunk warm-up. Each path's FLOPs are counted in an untimed run (torch's FlopCounterMode:
matmuls, the per-example products included) and set against the fp32 peak of a 2048^3 matmul on the same
cores (`scripts.machine`): "bound" is the speed-up the batched path would reach at 100% of that peak against
the measured loop. Writes <out>/stats.json and <out>/stats.md.

    python -m scripts.bench_stats                         # 256 SST-2 rows, 256 paragraphs, chunks of 16
    python -m scripts.bench_stats --task trec6 --rows 512 --chunk 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from accelerate.utils import set_seed  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode

from scripts.machine import describe, peaks  # noqa: E402
from spafit_exp.core import results  # noqa: E402
from spafit_exp.inputs.data import PadCollator, load_task_data, mlm_examples, wikitext_paragraphs  # noqa: E402
from spafit_exp.inputs.modeling import build_model, build_tokenizer, mlm_model_like  # noqa: E402
from spafit_exp.ops.masking import FlatParams, bitfit_size, candidate_params  # noqa: E402
from spafit_exp.ops.persample import length_chunks, sq_grad_sum, sq_grad_sum_loop  # noqa: E402
from spafit_exp.run.config import compose  # noqa: E402
from spafit_exp.run.spec import resolve  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def compare(name: str, model, flat, rows: list[dict], collate, chunk: int, k: int, peak: float) -> dict:
    chunks = [collate(part) for part in length_chunks(rows, chunk)]
    singles = [collate([row]) for row in rows]
    sq_grad_sum(model, flat, chunks[-1:])  # warm-up: allocator, thread pool
    batched, batched_s = timed(lambda: sq_grad_sum(model, flat, chunks, desc=f"{name}: batched", examples=len(rows)))
    loop, loop_s = timed(lambda: sq_grad_sum_loop(model, flat, singles))
    flops = {"batched_flops": counted(lambda: sq_grad_sum(model, flat, chunks)),
             "loop_flops": counted(lambda: sq_grad_sum_loop(model, flat, singles))}
    error = float((batched - loop).abs().max() / loop.abs().max())
    top = set(torch.topk(batched, k).indices.tolist())
    overlap = len(top & set(torch.topk(loop, k).indices.tolist())) / k
    tokens = sum(len(r["input_ids"]) for r in rows)
    row = {"statistic": name, "examples": len(rows), "tokens": tokens, "chunk": chunk, "loop_s": loop_s,
           "batched_s": batched_s, "speedup": loop_s / batched_s, "loop_examples_per_s": len(rows) / loop_s,
           "batched_examples_per_s": len(rows) / batched_s, "max_rel_error": error, "topk": k, "topk_overlap": overlap,
           **flops, "loop_flops_per_s": flops["loop_flops"] / loop_s, "batched_flops_per_s": flops["batched_flops"] / batched_s,
           "speedup_bound": loop_s / (flops["batched_flops"] / peak)}
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    m = meta
    lines = ["# Gradient statistics: per-example loop vs batched per-example gradients", "",
             f"`{m['command']}`  ",
             f"{m['machine']}; torch {m['torch']}; model {m['model']} "
             f"({m['candidates']:,} candidate elements); load average {m['loadavg_start']} at start, "
             f"{m['loadavg_end']} at end. One timed run each.", "",
             "| statistic | examples | tokens | chunk | loop (s) | batched (s) | speed-up | loop ex/s | batched ex/s "
             "| max rel. error | top-k overlap |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['statistic']} | {r['examples']} | {r['tokens']:,} | {r['chunk']} | {r['loop_s']:.1f} | "
                     f"{r['batched_s']:.1f} | {r['speedup']:.1f}× | {r['loop_examples_per_s']:.1f} | "
                     f"{r['batched_examples_per_s']:.1f} | {r['max_rel_error']:.1e} | {r['topk_overlap']:.4f} |")
    lines += ["", "| statistic | loop GFLOP/example | loop GFLOP/s | batched GFLOP/example | batched GFLOP/s "
                  "| speed-up at 100% of peak (bound) |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        n = r["examples"]
        lines.append(f"| {r['statistic']} | {r['loop_flops'] / n / 1e9:.2f} | {r['loop_flops_per_s'] / 1e9:.0f} | "
                     f"{r['batched_flops'] / n / 1e9:.2f} | {r['batched_flops_per_s'] / 1e9:.0f} | "
                     f"{r['speedup_bound']:.1f}× |")
    total_loop = sum(r["loop_s"] for r in rows)
    total_batched = sum(r["batched_s"] for r in rows)
    lines += ["", f"Both statistics: loop {total_loop:.1f} s, batched {total_batched:.1f} s, "
                  f"{total_loop / total_batched:.1f}× faster (top-k: k = {rows[0]['topk']:,}, the BitFit size)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rows", type=int, default=256, help="training rows for the task-loss statistic")
    parser.add_argument("--paragraphs", type=int, default=256, help="WikiText paragraphs for the MLM statistic")
    parser.add_argument("--chunk", type=int, default=16, help="examples per batched forward/backward")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = resolve(compose([f"model={args.model}", f"task={args.task}", f"trainer.max_train_samples={args.rows}"]))
    set_seed(spec.trainer.seed)
    model = build_model(spec.model, spec.task)
    tokenizer = build_tokenizer(spec.model)
    flat = FlatParams(candidate_params(model))
    k = bitfit_size(model)
    meta = {"command": " ".join(["python", *sys.argv]), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "model": args.model, "candidates": flat.n, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            **vars(args)}
    meta["peaks"] = peaks()
    meta["machine"] = describe(meta["peaks"])
    data = load_task_data(spec, tokenizer)
    rows = [compare(f"downstream ({args.task})", model, flat, data.train[: args.rows], data.collate, args.chunk, k,
                    meta["peaks"]["fp32"])]
    mlm = mlm_model_like(spec.model, model, spec.trainer.seed)
    texts = wikitext_paragraphs()[: args.paragraphs]
    masked = [r for r in mlm_examples(texts, tokenizer, spec.trainer.max_len, spec.trainer.seed)
              if any(label != -100 for label in r["labels"])]
    rows.append(compare("pretrain (WikiText MLM)", mlm, flat, masked, PadCollator(tokenizer.pad_token_id or 0),
                        args.chunk, k, meta["peaks"]["fp32"]))
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results.write_bench(args.out, "stats", meta, rows, markdown(rows, meta))


if __name__ == "__main__":
    main()
