"""How long the runs still to do will take, from what the finished ones measured.

Per (model, method tag), from completed records of that pair: the median training throughput in tokens/s
(`timing.train_tokens_per_s`; records from before tokens were counted: samples/s) and the median time outside the
training loop (`timing.wall_s - timing.train_s`: loading, evaluation, saving). A remaining run's training tokens are
rows × epochs × tokens per row, with the rows and tokens per row of its task measured by finished runs of that
task, else the task YAML's `size` (published train rows, mean tokens per row). Without a finished run of the
pair, an assumption: 6 × parameters × tokens FLOPs (forward + backward of every weight, whatever the method trains)
at a sustained rate (`--tflops`, default below), but no optimizer step faster than a floor per encoder layer (small
batches of short rows are bound by kernel launches, not FLOPs); loading and evaluation are left out. Estimates are
compute time (the sum over runs), not the wall-clock time of a sweep running in parallel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spafit_exp.core.record import Record

# A task YAML with `size: null` (and no finished run of the task): a mid-sized task of mid-length rows
UNSIZED_TRAIN_ROWS, UNSIZED_TOKENS_PER_ROW = 10_000, 64
DEFAULT_TFLOPS = 20.0  # sustained fp32/TF32 fine-tuning throughput of one recent data-centre GPU at batch 16
STEP_FLOOR_S_PER_LAYER = 0.003  # forward + backward + optimizer launches of one encoder layer, per step


@dataclass
class Measured:
    """Medians over a (model, method tag)'s completed records."""

    runs: int
    tokens_per_s: float | None
    samples_per_s: float | None
    overhead_s: float


def _median(values) -> float | None:
    values = [float(v) for v in values if isinstance(v, (int, float)) and np.isfinite(v) and v > 0]
    return float(np.median(values)) if values else None


def measure(records: list[Record]) -> tuple[dict[tuple[str, str], Measured], dict[tuple[str, int | None], tuple]]:
    """(model, method tag) -> Measured; (task, max_train_samples) -> (train rows, tokens per row) — from
    completed records."""
    by_pair: dict[tuple[str, str], list[Record]] = {}
    tasks: dict[tuple[str, int | None], list[tuple[float, float | None]]] = {}
    for record in records:
        if not record.completed:
            continue
        by_pair.setdefault((record.model, record.method_tag), []).append(record)
        train, data = record.section("train"), record.section("data")
        limit = (record.section("config").get("trainer") or {}).get("max_train_samples")
        per_row = train["tokens"] / train["samples"] if train.get("tokens") and train.get("samples") else None
        if data.get("train_rows"):
            tasks.setdefault((record.task, limit), []).append((data["train_rows"], per_row))
    pairs = {}
    for pair, done in by_pair.items():
        timing = [r.section("timing") for r in done]
        overhead = _median([t.get("wall_s", 0) - t.get("train_s", 0) for t in timing if "train_s" in t]) or 0.0
        pairs[pair] = Measured(len(done), _median(t.get("train_tokens_per_s") for t in timing),
                               _median(t.get("train_samples_per_s") for t in timing), overhead)
    sizes = {key: (_median(r for r, _ in seen), _median(t for _, t in seen)) for key, seen in tasks.items()}
    return pairs, sizes


def model_parameters(arch: dict) -> float:
    """Weights of a BERT/RoBERTa-style encoder from its architecture fields (embeddings, attention, feed-forward,
    layer norms), without building it."""
    h, ff, layers = arch.get("hidden_size", 0), arch.get("intermediate_size", 0), arch.get("num_hidden_layers", 0)
    embeddings = (arch.get("vocab_size", 0) + arch.get("max_position_embeddings", 0) + arch.get("type_vocab_size", 0)) * h
    per_layer = 4 * h * h + 4 * h + 2 * h * ff + ff + h + 4 * h
    return float(embeddings + layers * per_layer)


def run_seconds(job, arch: dict, pairs: dict, sizes: dict, tflops: float = DEFAULT_TFLOPS) -> tuple[float, str]:
    """(seconds, basis) for one remaining run (a sweep_plan.Job): `measured` when its (model, method) has finished
    runs, else `assumed`."""
    rows, per_row = sizes.get((job.task, job.max_train_samples), (None, None))
    rows = rows or min(job.train_rows or UNSIZED_TRAIN_ROWS, job.max_train_samples or 10**12)
    per_row = per_row or job.tokens_per_row or UNSIZED_TOKENS_PER_ROW
    samples = rows * job.epochs
    measured = pairs.get((job.model, job.method_tag))
    if measured is not None and measured.tokens_per_s:
        return samples * per_row / measured.tokens_per_s + measured.overhead_s, "measured"
    if measured is not None and measured.samples_per_s:
        return samples / measured.samples_per_s + measured.overhead_s, "measured"
    flops_s = 6 * model_parameters(arch) * samples * per_row / (tflops * 1e12)
    steps = -(-rows // max(job.batch_size, 1)) * job.epochs
    return max(flops_s, steps * STEP_FLOOR_S_PER_LAYER * arch.get("num_hidden_layers", 12)), "assumed"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 360 else f"{seconds / 60:,.1f} min"
