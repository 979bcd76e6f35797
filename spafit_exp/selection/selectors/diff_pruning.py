"""`selector=diff_pruning` (subset paper, section 3.1): fine-tune fully with an L1 penalty on theta - theta0
(method full_ft_l1 in our loop, at its own rate `prune_lr`), then keep the k largest |theta - theta0| of the
fine-tuned model, once (`prune_schedule=once`): the magnitude pruning of a finished fine-tune to a target sparsity
that dguo98/DiffPruning's examples/run_glue_mag.py does. With `retrain: true` the k elements are trained again
from theta0 (their examples/run_glue_fixmask_finetune.py); with `retrain: false` (`selector=diff_pruning_noretrain`)
the pruned model itself — theta0 plus the k kept differences, with the fine-tuned head — is evaluated.

The fine-tune runs once per (model, task, decoder, recipe, stage seed): its deltas and head are cached and shared
by every retraining learning rate of a grid, by both variants and, under `decoder.stage_seed=shared` (default), by
every repetition, as the paper prunes once.

`prune_schedule=gradual` (`selector=diff_pruning_gradual`, `diff_pruning_gradual_noretrain`; ours) prunes the
differences during the fine-tune, as Guo et al. project their diff vector to the target sparsity and then keep
training it: the kept count follows Zhu & Gupta's cubic schedule from all candidates down to k by `prune_end` of the
steps, and the rest of the fine-tune trains those k. The pruned model is then the fine-tuned model itself; under
`once` the fine-tune's changes are dense and the top 0.1% keeps little of them (SST-2 sanity, embedded model:
0.516 once, 0.773 gradual; docs/subset.md)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import MISSING
from tqdm.auto import tqdm

from spafit_exp.core.errors import ConfigError
from spafit_exp.core.results import replace_atomically
from spafit_exp.core.spec import plain
from spafit_exp.core.stored import read_cache
from spafit_exp.engine.loop import train
from spafit_exp.inputs.data import cache_root, load_task_data, run_key
from spafit_exp.inputs.modeling import build_tokenizer
from spafit_exp.methods import Selection
from spafit_exp.methods.regularized import Penalised, PenaltyOptions, full_ft_l1
from spafit_exp.ops.masking import FlatParams
from spafit_exp.ops.params import is_head, restored
from spafit_exp.ops.sampling import topk_indices
from spafit_exp.selection.selectors import Context, SelectorOptions, register


@dataclass
class DiffPruningOptions(SelectorOptions):
    l1: float = MISSING  # coefficient on |theta - theta0|
    prune_lr: float = MISSING  # the L1 fine-tune's rate
    retrain: bool = MISSING
    prune_schedule: str = MISSING  # once | gradual
    prune_end: float = MISSING  # gradual: fraction of the fine-tune's steps by which only k differences remain


SCHEDULES = ("once", "gradual")


class GradualPruning:
    """After every optimizer step: every few steps keep the `keep(step)` largest |theta - theta0| of the
    candidates (the rest back to theta0), then hold that mask until the next projection."""

    PROJECTIONS = 50  # over the ramp: each is a top-k over every candidate element

    def __init__(self, flat: FlatParams, theta0: list[torch.Tensor], k: int, end: float):
        self.flat, self.theta0, self.k, self.end = flat, theta0, k, end
        self.ramp, self.step, self.kept = 1, 0, None

    def on_schedule(self, total_steps: int) -> None:
        self.ramp = max(1, round(self.end * total_steps))  # the step by which only k differences are left

    def keep(self, step: int) -> int:
        n, left = self.flat.n, max(0.0, 1.0 - step / self.ramp)
        return max(self.k, min(n, round(self.k + (n - self.k) * left ** 3)))

    @torch.no_grad()
    def __call__(self) -> None:
        self.step += 1
        if self.step <= self.ramp and (self.step % max(1, self.ramp // self.PROJECTIONS) == 0
                                       or self.step == self.ramp):
            delta = torch.cat([(p - p0).reshape(-1) for p, p0 in zip(self.flat.params, self.theta0)])
            kept = torch.zeros(self.flat.n, dtype=torch.bool, device=delta.device)
            kept[topk_indices(delta.abs(), self.keep(self.step))] = True
            self.kept = kept
        if self.kept is not None:
            for p, p0, mask in zip(self.flat.params, self.theta0, self.flat.views(self.kept)):
                p.copy_(torch.where(mask, p, p0))

    def state_dict(self) -> dict:
        return {"step": self.step, "kept": self.kept}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.kept = int(state["step"]), state["kept"]


def _check(s: DiffPruningOptions) -> None:
    if s.l1 < 0:
        raise ConfigError(f"selector.l1={s.l1}: must be >= 0")
    if s.prune_lr <= 0:
        raise ConfigError(f"selector.prune_lr={s.prune_lr}: must be > 0")
    if s.prune_schedule not in SCHEDULES:
        raise ConfigError(f"selector.prune_schedule={s.prune_schedule}: must be one of {', '.join(SCHEDULES)}")
    if not 0 < s.prune_end <= 1:
        raise ConfigError(f"selector.prune_end={s.prune_end}: must be in (0, 1]")


def pruning_finetune(ctx: Context) -> dict:
    """{'delta': flat theta - theta0 of the candidates, 'head': tuned head tensors}, cached."""
    spec, s = ctx.spec, ctx.options
    seed = ctx.stage_seed  # not the run's under shared stages: one fine-tune for every repetition
    # the fine-tune keeps its last state, so the run's evaluation schedule and early stopping do not apply to it
    recipe = {k: v for k, v in plain(spec.trainer).items()
              if k not in ("eval_every", "early_stopping_patience")} | {"lr": float(s.prune_lr), "seed": seed}
    schedule = [s.prune_schedule] + ([float(s.prune_end), ctx.k] if s.prune_schedule == "gradual" else [])
    key = run_key(spec, "diff_pruning", float(s.l1), recipe, ctx.flat.names, schedule, ctx.decoder_id, seed=seed)
    path = cache_root(spec.data) / "stats" / f"{spec.task.name}-diffprune-{key}.pt"
    cached = read_cache(path, valid=lambda v: isinstance(v, dict) and isinstance(v.get("head"), dict)
                        and torch.is_tensor(v.get("delta")) and v["delta"].numel() == ctx.flat.n, what="statistics")
    if cached is not None:
        return cached
    tuned = replace(spec, trainer=replace(spec.trainer, checkpoint_every=0, lr=float(s.prune_lr), seed=seed,
                                          eval_every=None, early_stopping_patience=None))
    phase = tqdm(total=1, desc=f"diff-pruning fine-tune ({spec.task.name}, l1={float(s.l1):g})",
                 bar_format="{desc}", leave=False)  # a label over the loop's own epoch bars
    with phase, restored(ctx.model) as model:  # back to theta0 afterwards: the subset method decides what to keep
        theta0 = [p.detach().clone() for p in ctx.flat.params]
        options = PenaltyOptions(name="full_ft_l1", tag="full_ft_l1", lr=float(s.prune_lr), coefficient=float(s.l1),
                                 reduction="sum")
        method = (PrunedWhileTraining(model, options, ctx, theta0) if s.prune_schedule == "gradual"
                  else full_ft_l1(model, options))
        data = load_task_data(tuned, build_tokenizer(spec.model))
        set_seed(seed)  # its dropout: the same fine-tune whichever run computes it
        outcome = train(tuned, method, data, Accelerator())
        saved = {"delta": torch.cat([(p.detach() - p0).reshape(-1).cpu() for p, p0 in zip(ctx.flat.params, theta0)]),
                 "head": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if is_head(n)},
                 "losses": outcome.losses}  # the fine-tune's loss curve: what a check of "did it learn" reads
    with replace_atomically(path) as tmp:
        torch.save(saved, tmp)
    return saved


class PrunedWhileTraining(Penalised):
    """The L1 fine-tune pruned after every optimizer step (`GradualPruning`: its schedule and its state are the
    method's). Only candidates and the head train (anything else could not be kept in the pruned model)."""

    def __init__(self, model, options: PenaltyOptions, ctx: Context, theta0: list[torch.Tensor]):
        super().__init__(model, options, "l1")
        candidates = {id(p) for p in ctx.flat.params}
        for name, p in model.named_parameters():
            p.requires_grad_(id(p) in candidates or is_head(name))
        self.pruning = GradualPruning(ctx.flat, theta0, ctx.k, float(ctx.options.prune_end))

    def on_schedule(self, total_steps: int) -> None:
        self.pruning.on_schedule(total_steps)

    def after_step(self) -> None:
        self.pruning()

    def state_dict(self) -> dict:
        return self.pruning.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.pruning.load_state_dict(state)


@register("diff_pruning", options=DiffPruningOptions, validate=_check)
def diff_pruning(ctx: Context) -> Selection:
    s = ctx.options
    saved = pruning_finetune(ctx)
    index = topk_indices(saved["delta"].abs(), ctx.k)
    info = {"l1": float(s.l1), "retrain": bool(s.retrain), "prune_lr": float(s.prune_lr),
            "prune_schedule": s.prune_schedule, "prune_end": float(s.prune_end),
            "prune_losses": saved.get("losses")}
    if s.retrain:
        return ctx.picked(index, info=info)
    return ctx.picked(index, info=info, head=saved["head"], delta=saved["delta"][index], evaluate_only=True)
