"""Full fine-tuning with a penalty on the distance from the pre-trained weights (subset paper's baselines, and
the first phase of diff pruning): `full_ft_l1` adds lambda * sum |theta - theta0|, `full_ft_l2` adds
lambda/2 * sum (theta - theta0)^2 over the encoder (the head is not regularised).

The penalty's (sub)gradient, lambda * sign(theta - theta0) or lambda * (theta - theta0), is added to the task
gradient in the method hook, i.e. after clipping: clipping bounds the task gradient only.

Scale (`method.reduction`): `mean` (default) divides by the number of encoder elements, so lambda is the
penalty's weight per unit of mean distance and the subset paper's coefficients (0.01, 0.1, 1.0, Table 11) all train
(the per-element pull lambda/N stays far below most task gradients); `sum` makes lambda the per-element pull, on
which 0.01 already pins the encoder to theta0 under Adam (SST-2, embedded model: 0.509, loss flat — measured).
The paper's own normalisation is unpublished; its scores fall with lambda (CoNLL 0.90 / 0.88 / 0.84), between the
two readings. Diff pruning's L1 fine-tune uses `sum` with its own small coefficient (selector.l1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING

from spafit_exp.errors import ConfigError
from spafit_exp.methods import MethodOptions, Prepared, register
from spafit_exp.params import is_head


class DistancePenalty:
    def __init__(self, model: torch.nn.Module, kind: str, coefficient: float, reduction: str = "sum"):
        self.kind = kind
        self.pairs = [(p, p.detach().clone()) for n, p in model.named_parameters() if not is_head(n)]
        elements = sum(p.numel() for p, _ in self.pairs)
        self.coefficient = coefficient / elements if reduction == "mean" else coefficient

    @torch.no_grad()
    def value(self) -> float:
        if self.kind == "l1":
            return self.coefficient * sum(float((p - p0).abs().sum()) for p, p0 in self.pairs)
        return self.coefficient / 2 * sum(float((p - p0).square().sum()) for p, p0 in self.pairs)

    @torch.no_grad()
    def __call__(self) -> None:
        for p, p0 in self.pairs:
            if p.grad is None:
                continue
            delta = p - p0
            p.grad.add_(torch.sign(delta) if self.kind == "l1" else delta, alpha=self.coefficient)


REDUCTIONS = ("mean", "sum")


@dataclass
class PenaltyOptions(MethodOptions):
    coefficient: float = MISSING
    reduction: str = MISSING  # mean | sum over the encoder's elements


def validate_penalty(cfg: PenaltyOptions, num_layers: int) -> None:
    if not cfg.coefficient >= 0:
        raise ConfigError(f"method.coefficient={cfg.coefficient}: must be >= 0")
    if cfg.reduction not in REDUCTIONS:
        raise ConfigError(f"method.reduction={cfg.reduction}: must be one of {', '.join(REDUCTIONS)}")


def _penalised(model, cfg, kind: str) -> Prepared:
    for p in model.parameters():
        p.requires_grad_(True)
    penalty = DistancePenalty(model, kind, float(cfg.coefficient), cfg.reduction)
    return Prepared(model, before_step=penalty, info={"penalty": kind, "coefficient": float(cfg.coefficient),
                                                      "reduction": cfg.reduction})


@register("full_ft_l1", options=PenaltyOptions, validate=validate_penalty)
def full_ft_l1(model, cfg) -> Prepared:
    return _penalised(model, cfg, "l1")


@register("full_ft_l2", options=PenaltyOptions, validate=validate_penalty)
def full_ft_l2(model, cfg) -> Prepared:
    return _penalised(model, cfg, "l2")
