"""Optimizers: the dense AdamW every method gets by default, the masked AdamW of the per-step and fixed-subset
methods, and the learning-rate schedule. One param-groups rule (no weight decay on biases and LayerNorm weights)
serves both optimizers."""

from __future__ import annotations

import torch
from torch import nn

from spafit_exp.params import no_decay


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The trainable tensors in run_glue's two groups: biases and LayerNorm weights get no weight decay."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not no_decay(n)]
    plain = [p for n, p in model.named_parameters() if p.requires_grad and no_decay(n)]
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0})
              if g["params"]]
    if not groups:
        raise RuntimeError("the method left no trainable parameters")
    return groups


def make_optimizer(model: nn.Module, t) -> torch.optim.Optimizer:
    """Dense AdamW over the trainable tensors (fused where the build has it)."""
    kwargs = dict(lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps)
    try:
        return torch.optim.AdamW(param_groups(model, t.weight_decay), fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(param_groups(model, t.weight_decay), foreach=True, **kwargs)


def make_scheduler(optimizer, t, total_steps: int):
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
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
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
                if fixed is not None:
                    _adamw_compact(p.view(-1), p.grad.view(-1), state, fixed, lr, beta1, beta2, eps, wd)
                    continue
                index = self.selected.get(p)
                if index is None:  # dense tensor (e.g. the head): plain AdamW
                    _adamw(p.view(-1), p.grad.view(-1), state, None, lr, beta1, beta2, eps, wd)
                elif index.numel():
                    _adamw(p.view(-1), p.grad.view(-1), state, index, lr, beta1, beta2, eps, wd)
        return None


def _adamw(p, g, state, index, lr, beta1, beta2, eps, wd) -> None:
    m, v, t = state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1), state["step"].view(-1)
    if index is not None:
        p_sel, g_sel, m_sel, v_sel, t_sel = p[index], g[index], m[index], v[index], t[index] + 1
    else:
        p_sel, g_sel, m_sel, v_sel, t_sel = p, g, m, v, t.add_(1)
    m_sel = m_sel.mul(beta1).add_(g_sel, alpha=1 - beta1)
    v_sel = v_sel.mul(beta2).addcmul_(g_sel, g_sel, value=1 - beta2)
    tf = t_sel.to(p.dtype)
    bias1 = 1 - torch.pow(beta1, tf)
    bias2_sqrt = torch.sqrt(1 - torch.pow(beta2, tf))
    denom = (v_sel.sqrt() / bias2_sqrt).add_(eps)
    new_p = p_sel * (1 - lr * wd) - lr * (m_sel / bias1) / denom
    if index is None:
        m.copy_(m_sel)
        v.copy_(v_sel)
        p.copy_(new_p)
    else:
        m[index], v[index], t[index], p[index] = m_sel, v_sel, t_sel, new_p


def _adamw_compact(p, g, state, index, lr, beta1, beta2, eps, wd) -> None:
    """AdamW on p[index] with moments stored compactly (state[i] belongs to element index[i])."""
    if not index.numel():
        return
    m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
    g_sel = g[index]
    t.add_(1)
    m.mul_(beta1).add_(g_sel, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g_sel, g_sel, value=1 - beta2)
    tf = t.to(p.dtype)
    denom = (v.sqrt() / torch.sqrt(1 - torch.pow(beta2, tf))).add_(eps)
    p[index] = p[index] * (1 - lr * wd) - lr * (m / (1 - torch.pow(beta1, tf))) / denom


def masked_adamw(model: nn.Module, trainer_cfg, fixed: dict | None = None) -> MaskedAdamW:
    """MaskedAdamW over the trainable tensors, with the same no-decay groups as the dense optimizer."""
    return MaskedAdamW(param_groups(model, trainer_cfg.weight_decay), lr=trainer_cfg.lr,
                       betas=tuple(trainer_cfg.adam_betas), eps=trainer_cfg.adam_eps, fixed=fixed)
def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))
