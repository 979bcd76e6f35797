"""Full fine-tuning with a penalty on the distance from the pre-trained weights (subset paper's baselines, and
the first phase of diff pruning): `full_ft_l1` adds lambda * sum |theta - theta0|, `full_ft_l2` adds
lambda/2 * sum (theta - theta0)^2 over the encoder (the head is not regularised). The penalty is summed over the
encoder's elements in every reduction; `method.reduction` says what lambda weighs against:

- `batch_sum` (default): a task loss summed over the optimizer step's batch, as in the subset paper's framework
  (Flair: flair/nn/model.py DefaultClassifier builds CrossEntropyLoss(reduction="sum"); flair/trainers/trainer.py
  backprops that sum for every chunk of the mini-batch, rescales DDP's average back to the sum, and takes one
  optimizer step per mini-batch). Our loss is the mean over the step's B = batch_size x grad_accum x processes
  samples (Accelerate divides each micro-batch's mean by grad_accum, DDP averages over processes), so the same
  penalty is lambda / B per element against it. B is read from the trainer config when the loop builds the
  optimizer.
- `sum`: lambda per element against the mean loss (B times the paper's pull; 0.01 already pins the encoder on
  SST-2 with the embedded model: 0.509, loss flat — measured). Diff pruning's fine-tune uses it (selector.l1).
- `mean`: lambda / N for N encoder elements (22.7M on MiniLM): ~1e-9 per element, below AdamW's eps, so every
  coefficient trains exactly like full FT (docs/recommended_lr.md).

The penalty's (sub)gradient, lambda' * sign(theta - theta0) or lambda' * (theta - theta0), is added to the task
gradient in the method hook, i.e. after clipping: clipping bounds the task gradient only. (Flair clips the sum;
the ratio of penalty to task gradient is the same whenever the task gradient is not clipped.)

`summarize` records the encoder's ||theta - theta0||_1 and _2 at the best epoch in `method_info`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING

from spafit_exp.core.errors import ConfigError
from spafit_exp.methods import Method, MethodOptions, register
from spafit_exp.ops.params import is_head


class DistancePenalty:
    """The penalty's gradient hook. `coefficient` is the pull per element against the mean task loss; under
    `batch_sum` it is known once `per_step_batch` has been told the step's batch."""

    def __init__(self, model: torch.nn.Module, kind: str, coefficient: float, reduction: str = "sum"):
        self.kind, self.reduction, self.lam = kind, reduction, coefficient
        named = [(n, p) for n, p in model.named_parameters() if not is_head(n)]
        self.names = [n for n, _ in named]
        self.pairs = [(p, p.detach().clone()) for _, p in named]
        self.elements = sum(p.numel() for p, _ in self.pairs)
        self.coefficient: float | None = {"sum": coefficient, "mean": coefficient / self.elements}.get(reduction)

    def per_step_batch(self, samples: int) -> None:
        if self.reduction == "batch_sum":
            self.coefficient = self.lam / samples

    @torch.no_grad()
    def value(self) -> float:
        if self.kind == "l1":
            return self.coefficient * sum(float((p - p0).abs().sum()) for p, p0 in self.pairs)
        return self.coefficient / 2 * sum(float((p - p0).square().sum()) for p, p0 in self.pairs)

    @torch.no_grad()
    def __call__(self) -> None:
        if self.coefficient is None:
            raise RuntimeError("method.reduction=batch_sum: the step's batch is unknown (per_step_batch not called)")
        for p, p0 in self.pairs:
            if p.grad is None:
                continue
            delta = p - p0
            p.grad.add_(torch.sign(delta) if self.kind == "l1" else delta, alpha=self.coefficient)

    def summarize(self, state: dict[str, torch.Tensor]) -> dict:
        return distance_from(dict(zip(self.names, (p0 for _, p0 in self.pairs))), state)


@torch.no_grad()
def distance_from(start: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict:
    """The encoder's distance from `start` in a trained state (name -> tensor, e.g. the best epoch's): L1 and L2
    norms of theta - theta0 and how many elements differ at all, over the tensors both hold."""
    l1 = sq = 0.0
    changed = 0
    for name, p0 in start.items():
        if name not in state:
            continue
        delta = state[name].to(p0.device, torch.float64) - p0.double()
        l1 += float(delta.abs().sum())
        sq += float(delta.square().sum())
        changed += int(torch.count_nonzero(delta))
    return {"encoder_l1": l1, "encoder_l2": sq ** 0.5, "encoder_changed": changed}


def steps_batch(trainer) -> int:
    """Samples one optimizer step averages its loss over: the per-device batch, the accumulated micro-batches and
    the processes whose gradients DDP averages."""
    processes = torch.distributed.get_world_size() if torch.distributed.is_available() \
        and torch.distributed.is_initialized() else 1
    return int(trainer.batch_size) * int(trainer.grad_accum) * processes


REDUCTIONS = ("batch_sum", "sum", "mean")


@dataclass
class PenaltyOptions(MethodOptions):
    coefficient: float = MISSING
    reduction: str = MISSING  # batch_sum | sum | mean: what lambda weighs against (module docstring)


def validate_penalty(options: PenaltyOptions, num_layers: int) -> None:
    if not options.coefficient >= 0:
        raise ConfigError(f"method.coefficient={options.coefficient}: must be >= 0")
    if options.reduction not in REDUCTIONS:
        raise ConfigError(f"method.reduction={options.reduction}: must be one of {', '.join(REDUCTIONS)}")


class Penalised(Method):
    """Full fine-tuning whose gradient gets the penalty's before every optimizer step (after clipping)."""

    def __init__(self, model: torch.nn.Module, options: PenaltyOptions, kind: str):
        for p in model.parameters():
            p.requires_grad_(True)
        self.penalty = DistancePenalty(model, kind, float(options.coefficient), options.reduction)
        super().__init__(model, info={"penalty": kind, "coefficient": float(options.coefficient),
                                      "reduction": options.reduction})

    def make_optimizer(self, trainer) -> torch.optim.Optimizer:
        samples = steps_batch(trainer)  # known here first: `batch_sum` weighs lambda against it
        self.penalty.per_step_batch(samples)
        self.info.update(step_batch=samples, per_element=self.penalty.coefficient)  # the pull against the mean loss
        return super().make_optimizer(trainer)

    def before_step(self) -> None:
        self.penalty()

    def summarize(self, best_state: dict[str, torch.Tensor]) -> dict:
        return self.penalty.summarize(best_state)


@register("full_ft_l1", options=PenaltyOptions, validate=validate_penalty)
def full_ft_l1(model, options) -> Penalised:
    return Penalised(model, options, "l1")


@register("full_ft_l2", options=PenaltyOptions, validate=validate_penalty)
def full_ft_l2(model, options) -> Penalised:
    return Penalised(model, options, "l2")
