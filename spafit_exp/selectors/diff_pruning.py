"""`selector=diff_pruning`: fine-tune fully with an L1 penalty on theta - theta0 (method full_ft_l1 in our loop,
at its own rate `prune_lr`), keep the k largest |theta - theta0|. With `retrain: true` the k elements are
trained again from theta0; with `retrain: false` (`selector=diff_pruning_noretrain`) the pruned model itself —
theta0 plus the k kept differences, with the fine-tuned head — is evaluated.

The fine-tune runs once per (model, task, seed, recipe): its deltas and head are cached and shared by every
retraining learning rate of a grid, as the paper prunes once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import Accelerator
from omegaconf import MISSING, OmegaConf
from tqdm.auto import tqdm

from spafit_exp.data import cache_root, load_task_data, run_key
from spafit_exp.errors import ConfigError
from spafit_exp.methods.regularized import PenaltyOptions, full_ft_l1
from spafit_exp.modeling import build_tokenizer
from spafit_exp.params import is_head, restored
from spafit_exp.results import replace_atomically
from spafit_exp.sampling import topk_indices
from spafit_exp.selectors import Context, Picked, SelectorOptions, register
from spafit_exp.train import train


@dataclass
class DiffPruningOptions(SelectorOptions):
    l1: float = MISSING  # coefficient on |theta - theta0|
    prune_lr: float = MISSING  # the L1 fine-tune's rate
    retrain: bool = MISSING


def _check(s: DiffPruningOptions) -> None:
    if s.l1 < 0:
        raise ConfigError(f"selector.l1={s.l1}: must be >= 0")
    if s.prune_lr <= 0:
        raise ConfigError(f"selector.prune_lr={s.prune_lr}: must be > 0")


def pruning_finetune(ctx: Context) -> dict:
    """{'delta': flat theta - theta0 of the candidates, 'head': tuned head tensors}, cached."""
    cfg, s = ctx.cfg, ctx.options
    recipe = OmegaConf.to_container(cfg.trainer, resolve=True) | {"lr": float(s.prune_lr)}
    key = run_key(cfg, "diff_pruning", float(s.l1), recipe, ctx.flat.names)
    path = cache_root(cfg) / "stats" / f"{cfg.task.name}-diffprune-{key}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu")
    tuned = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    tuned.trainer.update(checkpoint_every=0, lr=float(s.prune_lr))
    phase = tqdm(total=1, desc=f"diff-pruning fine-tune ({cfg.task.name}, l1={float(s.l1):g})",
                 bar_format="{desc}", leave=False)  # a label over the loop's own epoch bars
    with phase, restored(ctx.model) as model:  # back to theta0 afterwards: the subset method decides what to keep
        theta0 = [p.detach().clone() for p in ctx.flat.params]
        options = PenaltyOptions(name="full_ft_l1", tag="full_ft_l1", lr=float(s.prune_lr), coefficient=float(s.l1),
                                 reduction="sum")
        outcome = train(tuned, full_ft_l1(model, options), load_task_data(tuned, build_tokenizer(cfg.model)),
                        Accelerator())
        saved = {"delta": torch.cat([(p.detach() - p0).reshape(-1).cpu() for p, p0 in zip(ctx.flat.params, theta0)]),
                 "head": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if is_head(n)},
                 "losses": outcome.losses}  # the fine-tune's loss curve: what a check of "did it learn" reads
    with replace_atomically(path) as tmp:
        torch.save(saved, tmp)
    return saved


@register("diff_pruning", options=DiffPruningOptions, validate=_check)
def diff_pruning(ctx: Context) -> Picked:
    s = ctx.options
    saved = pruning_finetune(ctx)
    index = topk_indices(saved["delta"].abs(), ctx.k)
    info = {"l1": float(s.l1), "retrain": bool(s.retrain), "prune_lr": float(s.prune_lr),
            "prune_losses": saved.get("losses")}
    if s.retrain:
        return Picked(index, info=info)
    return Picked(index, info=info, head=saved["head"], delta=saved["delta"][index], evaluate_only=True)
