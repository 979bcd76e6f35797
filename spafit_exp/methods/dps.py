"""DPS_Mix: Dynamic Parameter Selection, mixed variant (Zhang et al. 2022), after its reference code
(github.com/ZhangHaojie077/DPS: transformers/DPSMix/moudle.py and grads_ops.py, script/run_glue.sh).

The Linear weights of the encoder blocks, the pooler and the head are masked (where the reference puts its DPSMix
layers); embeddings, LayerNorms and biases train densely with the ordinary AdamW (the reference trains with the HF
Trainer's AdamW). Training alternates stages of U = int(update_ratio * total optimizer steps) steps:

- exploration (stages 1, 3, 5, ...): every step draws, per layer, a Bernoulli(1 - p) mask M over the weight's
  input columns; the forward uses W' = θ0 + M ⊙ (W − θ0) / (1 − p) (Mixout toward the pretrained weights θ0),
  W receives M ⊙ ∂L/∂W' (the reference does not rescale the gradient by 1/(1 − p)), and the stage sums
  (M ⊙ ∂L/∂W')² and how often each column was kept;
- exploitation (stages 2, 4, ...): at the stage's first step each layer keeps the elements whose mean squared
  gradient (sum / times kept, × exp(−times kept / U) when U ≥ `decay_from`) is in its top (1 − p); the forward
  mixes toward the weights T at the stage start, W' = T + M ⊙ (W − T) / (1 − p), with that mask for the stage.

Evaluation uses W itself (Mixout's expectation). Dropout is off, as the reference sets it for DPS runs. Statistics
are taken in the backward of the mixed weight, before gradient clipping, as the reference does."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from spafit_exp.core.errors import ConfigError
from spafit_exp.methods import Method, MethodOptions, ParamCounts, register
from spafit_exp.ops.params import count_params, is_head
from spafit_exp.ops.sampling import DeviceGenerator


@dataclass
class DpsOptions(MethodOptions):
    drop: float = MISSING  # p (the reference's reserve_p): exploration keeps a column w.p. 1 - p, exploitation the top 1 - p
    update_ratio: float = MISSING  # stage length as a fraction of the run's optimizer steps
    decay_from: int = MISSING  # stages of at least this many steps decay scores by exp(-times kept / U)
    seed: int = MISSING  # the exploration masks' generator


def validate_dps(options: DpsOptions, num_layers: int) -> None:
    if not 0.0 < options.drop < 1.0:
        raise ConfigError(f"method.drop={options.drop}: must be in (0, 1)")
    if not 0.0 < options.update_ratio <= 1.0:
        raise ConfigError(f"method.update_ratio={options.update_ratio}: must be in (0, 1]")


class _Layer:
    """One masked Linear weight and its selection state."""

    def __init__(self, weight: nn.Parameter):
        self.weight = weight
        self.pretrained = weight.detach().clone()  # θ0: the exploration stages mix toward it
        self.target = self.pretrained
        self.mask = torch.ones(1, weight.shape[1], dtype=weight.dtype, device=weight.device)
        self.grad_sq = torch.zeros_like(self.pretrained)
        self.kept = torch.zeros(weight.shape[1], dtype=weight.dtype, device=weight.device)
        self.exploring = True

    def follow_weight(self) -> None:
        """The layer is made on the host; the loop moves the model to the accelerator afterwards."""
        device = self.weight.device
        if self.pretrained.device != device:
            moved = {name: getattr(self, name).to(device) for name in ("pretrained", "mask", "grad_sq", "kept")}
            target_is_pretrained = self.target is self.pretrained
            for name, value in moved.items():
                setattr(self, name, value)
            self.target = self.pretrained if target_is_pretrained else self.target.to(device)

    def state(self) -> dict:
        return {"mask": self.mask, "grad_sq": self.grad_sq, "kept": self.kept, "exploring": self.exploring,
                "target": None if self.target is self.pretrained else self.target}

    def load(self, state: dict) -> None:
        self.mask, self.grad_sq, self.kept = state["mask"], state["grad_sq"], state["kept"]
        self.exploring = state["exploring"]
        self.target = self.pretrained if state["target"] is None else state["target"]


class _MixedWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, layer: _Layer, scale: float):
        ctx.layer, ctx.mask, ctx.exploring = layer, layer.mask, layer.exploring
        return torch.addcmul(layer.target, layer.mask, weight - layer.target, value=scale)

    @staticmethod
    def backward(ctx, grad):
        grad = grad * ctx.mask
        if ctx.exploring:
            ctx.layer.grad_sq.addcmul_(grad, grad)
            ctx.layer.kept.add_(ctx.mask.view(-1))
        return grad, None, None


def _mixed_forward(module: nn.Linear, layer: _Layer, scale: float, x: torch.Tensor) -> torch.Tensor:
    weight = _MixedWeight.apply(module.weight, layer, scale) if module.training else module.weight
    return F.linear(x, weight, module.bias)


def dps_linears(model: nn.Module) -> list[nn.Linear]:
    """Where the reference puts its DPSMix layers (transformers/models/bert/modeling_bert.py: query, key, value,
    BertSelfOutput, BertIntermediate and BertOutput dense, BertPooler.dense and the sequence classifier): the
    Linear layers of the encoder blocks, the pooler and the head. RoBERTa's head (dense + out_proj) stands where
    BERT's pooler dense and classifier do; under `model.head=linear` the head is its one Linear."""
    return [m for n, m in model.named_modules() if isinstance(m, nn.Linear)
            and (".encoder.layer." in f".{n}." or ".pooler." in f".{n}." or is_head(n))]


class DpsMix(Method):
    """DPS_Mix's stage schedule: a forward pre-hook enters each new optimizer step (sets masks and targets),
    `before_step` marks that a step was taken; the stage state rides in the resume checkpoint."""

    def __init__(self, model: nn.Module, options: DpsOptions):
        super().__init__(model)
        self.p, self.update_ratio, self.decay_from = float(options.drop), float(options.update_ratio), int(options.decay_from)
        self.modules = dps_linears(model)
        device = self.modules[0].weight.device
        self.rng = DeviceGenerator(options.seed)  # made on the weights' device at the first draw
        self.layers = [] if device.type == "meta" else [_Layer(m.weight) for m in self.modules]
        for module, layer in zip(self.modules, self.layers):
            module.forward = lambda x, module=module, layer=layer: _mixed_forward(module, layer, 1 / (1 - self.p), x)
        self.stage_steps: int | None = None
        self.steps = 0
        self.pending = True  # an optimizer step was taken since the masks were last set
        model.register_forward_pre_hook(self._before_forward)
        masked = sum(m.weight.numel() for m in self.modules)
        # a step updates the dense tensors and the (1 - p) of each masked weight it keeps; every element may train
        self.dense = sum(p.numel() for p in model.parameters())
        self.per_step = self.dense - masked + math.ceil(masked * (1 - self.p))
        self.info = {"trainable": self.per_step, "dense_trainable": self.dense, "masked_elements": masked,
                     "drop": self.p, "update_ratio": self.update_ratio, "selection": "dps_mix"}

    def counts(self) -> ParamCounts:
        return ParamCounts(self.per_step, count_params(self.model)[1], dense_trainable=self.dense)

    def on_schedule(self, total_steps: int) -> None:
        self.stage_steps = max(1, int(total_steps * self.update_ratio))

    def before_step(self) -> None:  # the next training forward starts a new step
        self.pending = True

    def _before_forward(self, module, args):
        if not module.training or not self.pending:
            return
        if self.stage_steps is None:
            raise RuntimeError("dps_mix: the loop must call on_schedule(total_steps) before training")
        self.pending = False
        self.steps += 1
        self.enter(self.steps)

    def stage(self, step: int) -> tuple[bool, bool]:
        """(exploring, first step of its stage) for 1-based optimizer step `step`."""
        u = self.stage_steps
        return math.ceil(step / u) % 2 == 1, (step - 1) % u == 0

    @torch.no_grad()
    def enter(self, step: int) -> None:
        exploring, first = self.stage(step)
        for layer in self.layers:
            layer.follow_weight()
            layer.exploring = exploring
            if exploring:
                if first:
                    layer.grad_sq.zero_()
                    layer.kept.zero_()
                layer.target = layer.pretrained
                layer.mask = torch.bernoulli(torch.full_like(layer.kept[None], 1 - self.p),
                                             generator=self.rng.on(layer.weight.device))
            elif first:
                layer.target = layer.weight.detach().clone()
                layer.mask = self.exploit_mask(layer).to(layer.weight.dtype)

    def exploit_mask(self, layer: _Layer) -> torch.Tensor:
        """Elements whose mean squared gradient over the last exploration stage is in the layer's top (1 - p)."""
        kept = layer.kept[None]
        score = layer.grad_sq / kept.clamp(min=1)
        if self.stage_steps >= self.decay_from:
            score = score * torch.exp(-kept / self.stage_steps)
        count = math.ceil(score.numel() * (1 - self.p))
        threshold = torch.topk(score.view(-1), count, sorted=False).values.min()
        return score >= threshold

    def state_dict(self) -> dict:
        return {"steps": self.steps, "pending": self.pending, "stage_steps": self.stage_steps,
                "generator": self.rng.get_state(), "layers": [layer.state() for layer in self.layers]}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.pending = state["steps"], state["pending"]
        self.stage_steps = state["stage_steps"]
        self.rng.set_state(state["generator"])
        for layer, saved in zip(self.layers, state["layers"]):
            layer.load(saved)


@register("dps_mix", options=DpsOptions, validate=validate_dps)
def dps_mix(model: nn.Module, options: DpsOptions) -> DpsMix:
    for p in model.parameters():
        p.requires_grad_(True)
    for module in model.modules():  # the reference turns dropout off for DPS runs
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return DpsMix(model, options)
