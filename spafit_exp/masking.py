"""Masked updates over a flat view of many parameter tensors: one implementation shared by the per-step
masked-gradient methods (Stochastic / Top / Random Tuning, DPS) and the fixed-mask subset methods.

`FlatParams` lays the candidate tensors end to end (offsets only: no copy of the weights). `MaskedAdamW` is
AdamW whose update touches only the selected elements of the candidate tensors: their moments, their
per-element step counts and their weight decay (`update=masked_step`); every other tensor it updates densely."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from spafit_exp.config import ConfigError
from spafit_exp.params import is_bitfit_param, is_head, no_decay


class FlatParams:
    """Named parameters addressed as one flat index space [0, n)."""

    def __init__(self, named: list[tuple[str, nn.Parameter]]):
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        sizes = [p.numel() for p in self.params]
        self.offsets = [0]
        for size in sizes:
            self.offsets.append(self.offsets[-1] + size)
        self.n = self.offsets[-1]
        self._bounds = torch.tensor(self.offsets[1:-1], dtype=torch.long)

    def split(self, flat_index: torch.Tensor) -> list[torch.Tensor]:
        """Flat indices -> per-tensor local (flattened) indices, in tensor order."""
        flat_index = flat_index.sort().values
        cuts = torch.searchsorted(flat_index, self._bounds.to(flat_index.device))
        pieces = torch.tensor_split(flat_index, cuts.cpu())
        return [piece - start for piece, start in zip(pieces, self.offsets[:-1])]

    def buffer(self, dtype=torch.float32) -> torch.Tensor:
        device = self.params[0].device if self.params else "cpu"
        return torch.empty(self.n, dtype=dtype, device=device)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat[a:b].view_as(p) for a, b, p in zip(self.offsets[:-1], self.offsets[1:], self.params)]


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


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))


def masked_adamw(model: nn.Module, trainer_cfg, fixed: dict | None = None) -> MaskedAdamW:
    """MaskedAdamW over the trainable tensors, with run_glue's no-decay groups (biases, LayerNorm weights)."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not no_decay(n)]
    plain = [p for n, p in model.named_parameters() if p.requires_grad and no_decay(n)]
    groups = [g for g in ({"params": decay, "weight_decay": trainer_cfg.weight_decay},
                          {"params": plain, "weight_decay": 0.0}) if g["params"]]
    return MaskedAdamW(groups, lr=trainer_cfg.lr, betas=tuple(trainer_cfg.adam_betas), eps=trainer_cfg.adam_eps,
                       fixed=fixed)


def candidate_params(model: nn.Module, cfg: DictConfig) -> list[tuple[str, nn.Parameter]]:
    """`method.candidates=encoder` (default): every non-head parameter; `no_embeddings` drops the embeddings."""
    which = cfg.get("candidates", "encoder")
    if which not in ("encoder", "no_embeddings"):
        raise ConfigError(f"method.candidates={which}: must be encoder or no_embeddings")
    return [(n, p) for n, p in model.named_parameters()
            if not is_head(n) and not (which == "no_embeddings" and ".embeddings." in n)]


def subnetwork_size(model: nn.Module, cfg: DictConfig, n: int) -> int:
    """method.k, else method.fraction of the candidates, else the model's BitFit size without the head."""
    if cfg.get("k") is not None:
        k = int(cfg.k)
    elif cfg.get("fraction") is not None:
        k = int(round(float(cfg.fraction) * n))
    else:
        k = bitfit_size(model)
    if not 1 <= k <= n:
        raise ConfigError(f"method.k={k}: must be in [1, {n}] (the number of candidate elements)")
    return k


def bitfit_size(model: nn.Module) -> int:
    """Encoder biases + embeddings LayerNorm bias, no pooler, no head: the papers' default sub-network size."""
    return sum(p.numel() for name, p in model.named_parameters() if is_bitfit_param(name))
