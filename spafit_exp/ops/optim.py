"""Optimizers: the dense AdamW every method gets by default, the dense AdamW with per-element weight decay of the
per-step methods' `masked_grad` update, the masked AdamW of their `masked_step` update and of the fixed-subset
methods, and the learning-rate schedule. One param-groups rule (no weight decay on biases and LayerNorm weights)
serves them all."""

from __future__ import annotations

import torch
from torch import nn

from spafit_exp.core.spec import TrainerSpec
from spafit_exp.ops.params import no_decay


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable tensors in run_glue's two groups: biases and LayerNorm weights get no weight decay."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not no_decay(n)]
    plain = [p for n, p in model.named_parameters() if p.requires_grad and no_decay(n)]
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0})
              if g["params"]]
    if not groups:
        raise RuntimeError("the method left no trainable parameters")
    return groups


def make_optimizer(model: nn.Module, t: TrainerSpec) -> torch.optim.Optimizer:
    """Dense AdamW over the trainable tensors (fused where the build has it)."""
    kwargs = dict(lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps)
    try:
        return torch.optim.AdamW(param_groups(model, t.weight_decay), fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(param_groups(model, t.weight_decay), foreach=True, **kwargs)


class SelectiveDecayAdamW(torch.optim.AdamW):
    """Dense AdamW (the per-step methods' `masked_grad` update: their unselected gradients are already zero) whose
    decoupled weight decay reaches only the elements listed in `selected` for the tensors registered there, so an
    element the step does not select keeps its value up to momentum (dense decay would shrink every weight by
    lr x wd per step: ~6-25% over a full SST-2 or QNLI run at lr 1e-3 to 3e-3). Tensors not in `selected` (the
    head, or every tensor on a dense step) decay as in AdamW. The decay is applied before the Adam update, as AdamW does, and
    inside `step` so a step the fp16 grad scaler skips skips it too."""

    def __init__(self, groups: list[dict], masked: list[nn.Parameter], **kwargs):
        ids = {id(p) for p in masked}
        split = []
        for group in groups:
            own = [p for p in group["params"] if id(p) in ids]
            rest = [p for p in group["params"] if id(p) not in ids]
            if rest:
                split.append({**group, "params": rest})
            if own:  # AdamW's own decay off; `selective_decay` applied in step()
                split.append({**group, "params": own, "weight_decay": 0.0, "selective_decay": group["weight_decay"]})
        super().__init__(split, **kwargs)
        self.selected: dict[nn.Parameter, torch.Tensor] = {}  # param -> flat local indices this step updates

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            wd = group.get("selective_decay", 0.0)
            if not wd:
                continue
            factor = 1 - group["lr"] * wd
            for p in group["params"]:
                if p.grad is None:
                    continue
                index = self.selected.get(p)
                if index is None:
                    p.mul_(factor)
                elif index.numel():
                    flat = p.view(-1)
                    flat[index] = flat[index] * factor
        return super().step(closure)


def selective_decay_adamw(model: nn.Module, t: TrainerSpec, masked: list[nn.Parameter]) -> SelectiveDecayAdamW:
    """SelectiveDecayAdamW over the trainable tensors (the dense optimizer's groups), fused where the build has it."""
    kwargs = dict(lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps)
    try:
        return SelectiveDecayAdamW(param_groups(model, t.weight_decay), masked, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return SelectiveDecayAdamW(param_groups(model, t.weight_decay), masked, foreach=True, **kwargs)


def make_scheduler(optimizer, t: TrainerSpec, total_steps: int):
    # transformers.optimization pulls in its trainer utilities (~5 s with peft): only a run that trains pays it
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    warmup = int(t.warmup_ratio * total_steps)
    if t.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW; for tensors registered in `selected` only the listed elements move in a step.

    Each element keeps its own step count, so its bias correction is that of the number of times it was
    actually updated (an element chosen for the first time gets Adam's first-step update, like any fresh
    parameter). State is dense per candidate tensor because any element may be chosen at any step."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 fixed: dict[nn.Parameter, torch.Tensor] | None = None):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        self.selected: dict[nn.Parameter, torch.Tensor] = {}  # param -> flat local indices for this step
        # A mask fixed for the whole run (subset selection): state is kept for the selected elements only,
        # O(k) instead of O(n) — the sparse-delta view of the trainable state.
        self.fixed = fixed or {}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            hyper = (group["lr"], *group["betas"], group["eps"], group["weight_decay"])
            batch = []  # one foreach update of every tensor that moves (see _adamw_batch)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                fixed = self.fixed.get(p)
                if not state:
                    shape = p.shape if fixed is None else (fixed.numel(),)
                    state["exp_avg"] = torch.zeros(shape, dtype=p.dtype, device=p.device)
                    state["exp_avg_sq"] = torch.zeros(shape, dtype=p.dtype, device=p.device)
                    state["step"] = torch.zeros(shape, dtype=torch.int32, device=p.device)
                if fixed is not None:  # compact state: state[i] belongs to element fixed[i]
                    index, compact = fixed, True
                else:  # this step's selection (dense moments), or None: every element (e.g. the head)
                    index, compact = self.selected.get(p), False
                if index is None or index.numel():
                    batch.append((p.view(-1), p.grad.view(-1), index, state, compact))
            if batch:
                _adamw_batch(batch, *hyper)
        return None


_STATE = ("exp_avg", "exp_avg_sq", "step")  # what MaskedAdamW keeps per updated element


def _adamw_batch(batch, lr, beta1, beta2, eps, wd) -> None:
    """AdamW on many tensors at once (foreach ops: a masked step touches ~100 tensors). Each entry is (flat param,
    flat grad, flat indices or None for every element, state, compact): a compact state holds one moment per
    listed element and is updated in place; otherwise the listed elements' moments and step counts are gathered
    and scattered back."""
    params, grads, m, v, steps = [], [], [], [], []
    for p, g, index, state, compact in batch:
        moments = [state[key].view(-1) for key in _STATE]
        if index is not None:
            p, g = p[index], g[index]
            if not compact:
                moments = [t[index] for t in moments]
        for out, tensor in zip((params, grads, m, v, steps), (p, g, *moments)):
            out.append(tensor)
    torch._foreach_add_(steps, 1)
    torch._foreach_mul_(m, beta1)
    torch._foreach_add_(m, grads, alpha=1 - beta1)
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
    tf = [t.to(p.dtype) for t, p in zip(steps, params)]
    bias1 = torch._foreach_pow(beta1, tf)  # 1 - beta1^t
    torch._foreach_neg_(bias1)
    torch._foreach_add_(bias1, 1)
    bias2_sqrt = torch._foreach_pow(beta2, tf)  # sqrt(1 - beta2^t)
    torch._foreach_neg_(bias2_sqrt)
    torch._foreach_add_(bias2_sqrt, 1)
    torch._foreach_sqrt_(bias2_sqrt)
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, bias2_sqrt)
    torch._foreach_add_(denom, eps)
    update = torch._foreach_div(m, bias1)
    torch._foreach_mul_(update, lr)
    torch._foreach_div_(update, denom)
    torch._foreach_mul_(params, 1 - lr * wd)  # in place: a dense entry is the parameter itself
    torch._foreach_sub_(params, update)
    for (p, _, index, state, compact), *new in zip(batch, params, m, v, steps):
        if index is None:
            continue
        p[index] = new[0]
        if not compact:
            for key, value in zip(_STATE, new[1:]):
                state[key].view(-1)[index] = value


def masked_adamw(model: nn.Module, trainer: TrainerSpec, fixed: dict | None = None) -> MaskedAdamW:
    """MaskedAdamW over the trainable tensors, with the same no-decay groups as the dense optimizer."""
    return MaskedAdamW(param_groups(model, trainer.weight_decay), lr=trainer.lr,
                       betas=tuple(trainer.adam_betas), eps=trainer.adam_eps, fixed=fixed)
def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))
