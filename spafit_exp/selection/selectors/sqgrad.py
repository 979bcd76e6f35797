"""Gradient-statistic selectors (subset paper, section 3.1): the k largest of

- `downstream_sqgrad`: F_down, the mean over the training rows of each row's squared task-loss gradient (eq. 2,
  the empirical Fisher diagonal);
- `pretrain_sqgrad`: F_pretr, the same for the MLM loss on WikiText paragraphs (vendored WikiText-2 raw);
- `combined`: F_down / (1 + F_pretr) (eq. 3, literally by default; `normalise=mean` rescales both first).

Gradients are per example whatever `stat_batch_size` is: it only sets how many examples share one batched
forward/backward (spafit_exp/ops/persample.py). Statistics are computed once, cached on disk (keyed by model, task
slice, decoder, sample count and the stage's seed — one for every repetition by default, `decoder.stage_seed`) and
shared by every learning rate and repetition of a grid, as the paper shares them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING

from spafit_exp.core.errors import ConfigError
from spafit_exp.core.results import replace_atomically
from spafit_exp.core.stored import read_cache
from spafit_exp.inputs.data import PadCollator, cache_root, load_task_data, mlm_examples, run_key, wikitext_paragraphs
from spafit_exp.inputs.modeling import build_tokenizer, mlm_model_like
from spafit_exp.methods import Selection
from spafit_exp.ops.persample import length_chunks, sq_grad_sum
from spafit_exp.ops.sampling import topk_indices
from spafit_exp.selection.selectors import Context, SelectorOptions, register

# Part of every statistic's cache key. 2: means over examples, computed batched with exact per-example gradients
# (1 was sums, and with stat_batch_size > 1 squared batch gradients).
STATS_VERSION = 2

NORMALISATIONS = ("none", "mean")


@dataclass
class DownstreamOptions(SelectorOptions):
    stat_samples: Optional[int] = MISSING  # training rows (null = all)
    stat_batch_size: int = MISSING  # examples per batched forward/backward (memory and speed only)


@dataclass
class PretrainOptions(SelectorOptions):
    stat_batch_size: int = MISSING
    pretrain_samples: int = MISSING  # WikiText paragraphs
    wikitext: Optional[str] = MISSING  # raw WikiText file; null = the vendored one


@dataclass
class CombinedOptions(DownstreamOptions):
    pretrain_samples: int = MISSING
    wikitext: Optional[str] = MISSING
    normalise: str = MISSING  # none (eq. 3) | mean (each statistic scaled to mean 1 first)


def _cached(ctx: Context, kind: str, extra, compute) -> torch.Tensor:
    spec = ctx.spec
    key = run_key(spec, kind, STATS_VERSION, extra, seed=ctx.stage_seed)
    path = cache_root(spec.data) / "stats" / f"{spec.task.name}-{kind}-{key}.pt"
    cached = read_cache(path, valid=lambda v: torch.is_tensor(v) and v.numel() == ctx.flat.n, what="statistics")
    if cached is not None:
        return cached
    value = compute()
    with replace_atomically(path) as tmp:
        torch.save(value.cpu(), tmp)
    return value


def mean_sq_grad(model, flat, rows: list[dict], collate, chunk: int, desc: str) -> torch.Tensor:
    """(1/N) sum_i g_i^2 over the N rows (eq. 2), with per-example gradients computed `chunk` rows at a time."""
    batches = (collate(part) for part in length_chunks(rows, chunk))
    return sq_grad_sum(model, flat, batches, desc=desc, examples=len(rows)) / max(len(rows), 1)


def downstream_stats(ctx: Context) -> torch.Tensor:
    s, spec = ctx.options, ctx.spec

    def compute():
        data = load_task_data(spec, build_tokenizer(spec.model))
        rows = data.train[: s.stat_samples] if s.stat_samples else data.train
        return mean_sq_grad(ctx.model, ctx.flat, rows, data.collate, s.stat_batch_size,
                            f"downstream sq-grad ({spec.task.name})")

    return _cached(ctx, "downstream", [ctx.decoder_id, s.stat_samples, ctx.flat.names], compute)


def pretrain_stats(ctx: Context) -> torch.Tensor:
    """F_pretr over those of the first `pretrain_samples` paragraphs that have a masked token: a paragraph without
    one has no MLM loss (its single-example loss is 0/0), so it is not a sample of eq. 2."""
    s, spec = ctx.options, ctx.spec

    def compute():
        mlm = mlm_model_like(spec.model, ctx.model, ctx.stage_seed)
        tokenizer = build_tokenizer(spec.model)
        texts = wikitext_paragraphs(s.wikitext)[: s.pretrain_samples]
        rows = [r for r in mlm_examples(texts, tokenizer, spec.trainer.max_len, ctx.stage_seed)
                if any(label != -100 for label in r["labels"])]
        return mean_sq_grad(mlm, ctx.flat, rows, PadCollator(tokenizer.pad_token_id or 0), s.stat_batch_size,
                            f"pretrain sq-grad (WikiText, {len(rows)} paragraphs)")

    return _cached(ctx, "pretrain", [s.pretrain_samples, str(s.wikitext), ctx.flat.names], compute)


def combine(f_down: torch.Tensor, f_pretr: torch.Tensor, normalise: str) -> torch.Tensor:
    """Eq. 3: F_down / (1 + F_pretr), each F a mean over its examples (eq. 2: 1/N sum_i g_i^2, N rows or
    paragraphs), as downstream_stats / pretrain_stats return them. `none` (default) is eq. 3 literally. The two
    differ by orders of magnitude (different losses and heads), which decides whether the `1 +` matters at all:
    `mean`, an option of ours, rescales each to mean 1 over the candidates first, so the ratio trades them off on
    equal terms."""
    if normalise == "mean":
        f_down = f_down / f_down.mean().clamp_min(1e-30)
        f_pretr = f_pretr / f_pretr.mean().clamp_min(1e-30)
    return f_down / (1 + f_pretr)


def _check_batch(s) -> None:
    if s.stat_batch_size < 1:
        raise ConfigError(f"selector.stat_batch_size={s.stat_batch_size}: must be >= 1")


def _check_combined(s: CombinedOptions) -> None:
    _check_batch(s)
    if s.normalise not in NORMALISATIONS:
        raise ConfigError(f"selector.normalise={s.normalise}: must be one of {', '.join(NORMALISATIONS)}")


@register("downstream_sqgrad", options=DownstreamOptions, validate=_check_batch)
def downstream_sqgrad(ctx: Context) -> Selection:
    return ctx.picked(topk_indices(downstream_stats(ctx), ctx.k))


@register("pretrain_sqgrad", options=PretrainOptions, validate=_check_batch)
def pretrain_sqgrad(ctx: Context) -> Selection:
    return ctx.picked(topk_indices(pretrain_stats(ctx), ctx.k))


@register("combined", options=CombinedOptions, validate=_check_combined)
def combined(ctx: Context) -> Selection:
    scores = combine(downstream_stats(ctx), pretrain_stats(ctx), ctx.options.normalise)
    return ctx.picked(topk_indices(scores, ctx.k), info={"normalise": ctx.options.normalise})
