"""Gradient-statistic selectors (subset paper, section 3.1): the k largest of

- `downstream_sqgrad`: sum over the training set of squared task-loss gradients (the empirical Fisher diagonal);
- `pretrain_sqgrad`: the same for the MLM loss on WikiText paragraphs (vendored WikiText-2 raw);
- `combined`: F_down / (1 + F_pretr) (eq. 3).

Statistics are computed once, cached on disk (keyed by model, task slice, seed, decoder and sample count) and
shared by every learning rate and repetition of a grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING
from torch.utils.data import DataLoader

from spafit_exp.data import cache_root, load_task_data, mlm_batches, run_key, wikitext_paragraphs
from spafit_exp.errors import ConfigError
from spafit_exp.masking import FlatParams
from spafit_exp.modeling import build_tokenizer, mlm_model_like
from spafit_exp.results import replace_atomically
from spafit_exp.sampling import topk_indices
from spafit_exp.selectors import Context, Picked, SelectorOptions, register

NORMALISATIONS = ("none", "mean")


@dataclass
class DownstreamOptions(SelectorOptions):
    stat_samples: Optional[int] = MISSING  # training rows (null = all)
    stat_batch_size: int = MISSING  # 1 = per-example squared gradients


@dataclass
class PretrainOptions(SelectorOptions):
    stat_batch_size: int = MISSING
    pretrain_samples: int = MISSING  # WikiText paragraphs
    wikitext: Optional[str] = MISSING  # raw WikiText file; null = the vendored one


@dataclass
class CombinedOptions(DownstreamOptions):
    pretrain_samples: int = MISSING
    wikitext: Optional[str] = MISSING
    normalise: str = MISSING  # mean | none


def sq_grad_sum(model: torch.nn.Module, flat: FlatParams, batches) -> torch.Tensor:
    """Sum over batches of the squared gradient of the loss, per candidate element (eval mode: no dropout).
    With batches of one example this is the empirical Fisher diagonal of the paper."""
    by_name = dict(model.named_parameters())
    params = [by_name.get(n) for n in flat.names]
    requires = {n: p.requires_grad for n, p in by_name.items()}
    for p in params:
        if p is not None:
            p.requires_grad_(True)
    total = torch.zeros(flat.n, dtype=torch.float32, device=flat.params[0].device)
    views = flat.views(total)
    was_training = model.training
    model.eval()
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        with torch.no_grad():
            for view, p in zip(views, params):
                if p is not None and p.grad is not None:
                    view.addcmul_(p.grad, p.grad)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    for n, p in by_name.items():
        p.requires_grad_(requires[n])
    return total


def _cached(cfg, kind: str, extra, compute) -> torch.Tensor:
    path = cache_root(cfg) / "stats" / f"{cfg.task.name}-{kind}-{run_key(cfg, kind, extra)}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu")
    value = compute()
    with replace_atomically(path) as tmp:
        torch.save(value.cpu(), tmp)
    return value


def downstream_stats(ctx: Context) -> torch.Tensor:
    s, cfg = ctx.options, ctx.cfg

    def compute():
        data = load_task_data(cfg, build_tokenizer(cfg.model))
        rows = data.train[: s.stat_samples] if s.stat_samples else data.train
        return sq_grad_sum(ctx.model, ctx.flat, DataLoader(rows, batch_size=s.stat_batch_size, collate_fn=data.collate))

    return _cached(cfg, "downstream", [ctx.decoder_key, s.stat_samples, s.stat_batch_size, ctx.flat.names], compute)


def pretrain_stats(ctx: Context) -> torch.Tensor:
    s, cfg = ctx.options, ctx.cfg

    def compute():
        mlm = mlm_model_like(cfg.model, ctx.model, cfg.trainer.seed)
        texts = wikitext_paragraphs(s.wikitext)[: s.pretrain_samples]
        batches = mlm_batches(texts, build_tokenizer(cfg.model), cfg.trainer.max_len, s.stat_batch_size,
                              cfg.trainer.seed)
        return sq_grad_sum(mlm, ctx.flat, batches)

    return _cached(cfg, "pretrain", [s.pretrain_samples, s.stat_batch_size, str(s.wikitext), ctx.flat.names], compute)


def combine(f_down: torch.Tensor, f_pretr: torch.Tensor, normalise: str) -> torch.Tensor:
    """Eq. 3: F_down / (1 + F_pretr). The two statistics differ by orders of magnitude (different losses, sample
    counts, heads), which decides whether the `1 +` matters at all; `mean` rescales each to mean 1 first so the
    ratio trades them off on equal terms; `none` is eq. 3 literally."""
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
def downstream_sqgrad(ctx: Context) -> Picked:
    return Picked(topk_indices(downstream_stats(ctx), ctx.k))


@register("pretrain_sqgrad", options=PretrainOptions, validate=_check_batch)
def pretrain_sqgrad(ctx: Context) -> Picked:
    return Picked(topk_indices(pretrain_stats(ctx), ctx.k))


@register("combined", options=CombinedOptions, validate=_check_combined)
def combined(ctx: Context) -> Picked:
    scores = combine(downstream_stats(ctx), pretrain_stats(ctx), ctx.options.normalise)
    return Picked(topk_indices(scores, ctx.k), info={"normalise": ctx.options.normalise})
