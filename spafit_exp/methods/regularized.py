"""Full fine-tuning with a penalty on the distance from the pre-trained weights (subset paper's baselines, and
the first phase of diff pruning): `full_ft_l1` adds lambda * sum |theta - theta0|, `full_ft_l2` adds
lambda/2 * sum (theta - theta0)^2 over the encoder (the head is not regularised).

The penalty's (sub)gradient, lambda * sign(theta - theta0) or lambda * (theta - theta0), is added to the task
gradient in the method hook, i.e. after clipping: clipping bounds the task gradient only.

Scale: summed over elements, not averaged, so lambda is the per-element pull. The subset paper's coefficients
(0.01, 0.1, 1.0, Table 11) only have the effect it reports on this scale: averaged over 125M elements they would
vanish (a pull of ~1e-10 per element) and every coefficient would score like full FT, while the paper's primary
scores fall with lambda (CoNLL 0.90 / 0.88 / 0.84). Under Adam a per-element pull of 0.01 exceeds most task
gradients, so only elements with |g| > lambda move far from theta0: the L1 soft threshold."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING

from spafit_exp.errors import ConfigError
from spafit_exp.methods import MethodOptions, Prepared, register
from spafit_exp.params import is_head


class DistancePenalty:
    def __init__(self, model: torch.nn.Module, kind: str, coefficient: float):
        self.kind, self.coefficient = kind, coefficient
        self.pairs = [(p, p.detach().clone()) for n, p in model.named_parameters() if not is_head(n)]

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


@dataclass
class PenaltyOptions(MethodOptions):
    coefficient: float = MISSING


def validate_penalty(cfg: PenaltyOptions, num_layers: int) -> None:
    if not cfg.coefficient >= 0:
        raise ConfigError(f"method.coefficient={cfg.coefficient}: must be >= 0")


def _penalised(model, cfg, kind: str) -> Prepared:
    for p in model.parameters():
        p.requires_grad_(True)
    penalty = DistancePenalty(model, kind, float(cfg.coefficient))
    return Prepared(model, before_step=penalty, info={"penalty": kind, "coefficient": float(cfg.coefficient)})


@register("full_ft_l1", options=PenaltyOptions, validate=validate_penalty)
def full_ft_l1(model, cfg) -> Prepared:
    return _penalised(model, cfg, "l1")


@register("full_ft_l2", options=PenaltyOptions, validate=validate_penalty)
def full_ft_l2(model, cfg) -> Prepared:
    return _penalised(model, cfg, "l2")
