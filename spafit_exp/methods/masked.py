"""Per-step masked-gradient methods (Stochastic Tuning paper): every candidate element may train, but each
optimizer step updates only a sub-network of k elements chosen from the current gradients.

- `stoc_tuning`: importance I = |mu * theta * g|; sample k elements without replacement with p = I^2 / sum I^2;
  `top_tuning`: the k largest I, deterministically; `random_tuning`: k elements uniformly.

`method.update=masked_grad` (default) zeroes the unselected gradients before one dense AdamW step (global step
count, moments decay everywhere, momentum keeps moving recently drawn elements): the reference codes of this
family (ChildTuning's optimizer, DPS, FISH). Its weight decay reaches only the step's selected elements
(optim.SelectiveDecayAdamW), so only elements drawn at some step ever change. `masked_step` leaves every
unselected element, its Adam moments and its weight decay untouched (the paper's eq. 2 read literally, via
MaskedAdamW). The default follows the SST-2 evidence in docs/stochastic_tuning.md. Only the candidates and the
head train; `summarize` records how many candidate elements differ from the pre-trained ones at the best epoch.
mu (`method.mu=activation`, default): for a Linear weight W[o, i] the mean of input feature i over the batch's
non-padding tokens; for a LayerNorm weight the mean of its normalised input; for an embedding matrix the row's
frequency among the batch's non-padding tokens; 1 for biases. `method.mu=ones` uses mu = 1 everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from spafit_exp.core.errors import ConfigError
from spafit_exp.methods import Method, MethodOptions, ParamCounts, register
from spafit_exp.methods.regularized import distance_from
from spafit_exp.methods.subnetwork import check_candidates, check_size_options, subset_size
from spafit_exp.ops.masking import FlatParams, bitfit_size, candidate_params, keep_only, split_at
from spafit_exp.ops.optim import masked_adamw, selective_decay_adamw
from spafit_exp.ops.params import count_params, is_head
from spafit_exp.ops.sampling import DeviceGenerator, topk_indices, uniform_indices
from spafit_exp.ops.successive import sample_without_replacement

UPDATES = ("masked_step", "masked_grad")
MUS = ("activation", "ones")


@dataclass
class MaskedOptions(MethodOptions):
    k: Optional[int] = MISSING  # sub-network size; null = fraction, or the model's BitFit size
    fraction: Optional[float] = MISSING
    candidates: str = MISSING  # encoder | no_embeddings
    update: str = MISSING  # masked_step | masked_grad
    mu: str = MISSING  # activation | ones
    seed: int = MISSING  # the sampler's generator


class ActivationMeans:
    """Forward hooks that record mu for every candidate weight from training forwards only (an evaluation pass
    between two steps must not leak into the next step's importance); reset after each optimizer step."""

    def __init__(self, model: nn.Module, candidates: set[int]):
        self.mask: torch.Tensor | None = None
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, float] = {}
        self.handles = [model.register_forward_pre_hook(self._capture_mask, with_kwargs=True)]
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if weight is None or id(weight) not in candidates:
                continue
            if isinstance(module, nn.Linear):
                self.handles.append(module.register_forward_hook(self._linear))
            elif isinstance(module, nn.LayerNorm):
                self.handles.append(module.register_forward_hook(self._layernorm))
            elif isinstance(module, nn.Embedding):
                self.handles.append(module.register_forward_hook(self._embedding))

    def _capture_mask(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        self.mask = mask.bool() if mask is not None else None

    def _valid(self, x: torch.Tensor, feature_dims: int) -> torch.Tensor:
        """Rows of x at real tokens. Token tensors are [batch, seq, *features] in the padded layout, or [1, seq]
        position ids broadcast over the batch; anything else (pooled [batch, hidden], the unpadded encoder's packed
        [1, tokens, hidden]) holds no padding. Deciding by rank keeps a pooled [batch, hidden] from being read as
        [batch, seq] when hidden happens to equal the batch's length."""
        mask = self.mask
        if mask is not None and x.dim() == 2 + feature_dims:
            if x.shape[:2] == mask.shape:
                return x[mask]
            if feature_dims == 0 and x.shape[0] == 1 and x.shape[1] == mask.shape[1]:
                return x.expand(mask.shape[0], -1)[mask]
        return x.reshape(-1, *x.shape[x.dim() - feature_dims:])

    def _add(self, weight: torch.Tensor, total: torch.Tensor, count: int) -> None:
        key = id(weight)
        self.sums[key] = self.sums[key] + total if key in self.sums else total
        self.counts[key] = self.counts.get(key, 0) + count

    @torch.no_grad()
    def _linear(self, module, inputs, output):
        if not module.training:
            return
        x = self._valid(inputs[0].detach(), 1).reshape(-1, module.in_features).float()
        self._add(module.weight, x.sum(0), x.shape[0])

    @torch.no_grad()
    def _layernorm(self, module, inputs, output):
        if not module.training:
            return
        x = self._valid(inputs[0].detach(), len(module.normalized_shape)).float()
        normed = F.layer_norm(x, module.normalized_shape, eps=module.eps).reshape(-1, module.normalized_shape[-1])
        self._add(module.weight, normed.sum(0), normed.shape[0])

    @torch.no_grad()
    def _embedding(self, module, inputs, output):
        if not module.training:
            return
        ids = self._valid(inputs[0].detach(), 0).reshape(-1)
        counts = torch.bincount(ids, minlength=module.num_embeddings).float()
        self._add(module.weight, counts.unsqueeze(1), ids.numel())

    def mu(self, param: nn.Parameter) -> torch.Tensor | None:
        key = id(param)
        if key not in self.sums:
            return None
        return self.sums[key] / max(self.counts[key], 1)  # [in] for Linear/LayerNorm, [rows, 1] for embeddings

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()


def validate_masked(options: MaskedOptions, num_layers: int) -> None:
    if options.update not in UPDATES:
        raise ConfigError(f"method.update={options.update}: must be one of {', '.join(UPDATES)}")
    if options.mu not in MUS:
        raise ConfigError(f"method.mu={options.mu}: must be one of {', '.join(MUS)}")
    check_candidates(options.candidates)
    check_size_options(options.k, options.fraction, "method")


class MaskedStep(Method):
    """A per-step masked method: before each optimizer step, score the candidates, pick k elements, restrict the
    coming update to them. `rule`: the selection rule's name, as method_info records it."""

    def __init__(self, model: nn.Module, options: MaskedOptions, select, rule: str, scored: bool = True):
        super().__init__(model)
        self.flat = FlatParams(candidate_params(model, options.candidates))
        candidates = {id(p) for p in self.flat.params}
        for name, p in model.named_parameters():  # a non-candidate outside the head (no_embeddings) stays frozen
            p.requires_grad_(id(p) in candidates or is_head(name))
        self.k = subset_size(options.k, options.fraction, self.flat.n, bitfit_size(model), "method")
        self.update = options.update
        self.select = select  # (scores or None, self) -> indices of the sub-network into scores, or None: dense step
        self.scored = scored
        self.optimizer = None
        self.steps = 0
        self.means = (ActivationMeans(model, {id(p) for p in self.flat.params})  # only a score reads mu
                      if scored and options.mu == "activation" else None)
        device = self.flat.params[0].device
        self.rng = DeviceGenerator(options.seed)  # made on the parameters' device at the first draw
        self._scores: torch.Tensor | None = None
        self.space: list | None = None  # layout of the last compact scores (None: the flat layout)
        # The pre-trained candidates on the host (exact: `summarize` counts the elements that changed at all)
        self.start = None if device.type == "meta" else {
            n: p.detach().to("cpu", copy=True) for n, p in zip(self.flat.names, self.flat.params)}
        head = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in candidates)
        # params.trainable counts what one step updates (k candidates + the dense head); the dense count apart
        self.per_step, self.dense = self.k + head, self.flat.n + head
        self.info = {"k": self.k, "n": self.flat.n, "fraction": self.k / self.flat.n, "update": self.update,
                     "mu": options.mu if scored else None, "selection": rule, "trainable": self.per_step,
                     "dense_trainable": self.dense}

    def counts(self) -> ParamCounts:
        return ParamCounts(self.per_step, count_params(self.model)[1], self.dense, self.k, self.flat.n)

    def state_dict(self) -> dict:
        """What an exact resume needs: the sampler's generator, the step count and the selection state."""
        return {"steps": self.steps, "generator": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        self.rng.set_state(state["generator"])

    @property
    def generator(self) -> torch.Generator:
        return self.rng.on(self.flat.params[0].device)

    def make_optimizer(self, trainer) -> torch.optim.Optimizer:
        if self.update == "masked_step":
            self.optimizer = masked_adamw(self.model, trainer)
        else:
            self.optimizer = selective_decay_adamw(self.model, trainer, self.flat.params)
        return self.optimizer

    def summarize(self, state: dict[str, torch.Tensor]) -> dict:
        """Candidate elements that differ from the pre-trained ones in `state` (at most steps x k plus what
        momentum carries: nothing else), and the L1 / L2 distance."""
        return distance_from(self.start, state) if self.start is not None else {}

    @torch.no_grad()
    def importance_sq(self, compact: bool = False) -> torch.Tensor:
        """I^2 = (mu * theta * g)^2 for every candidate element, written into one reused flat buffer (the layout of
        `self.flat`). `compact`: an embedding matrix contributes only the rows of the batch's tokens (mu = 0 on
        every other row, so is its I^2), placed after the other tensors; the result is a prefix of the buffer and
        `self.space` maps its positions back (`split`). Half the candidates of a BERT model are word embeddings,
        so a step's sampling reads half as many scores."""
        if self._scores is None:
            self._scores = self.flat.buffer()
        views = self.flat.views(self._scores)
        sparse, space, end = [], [], 0
        for i, (view, p) in enumerate(zip(views, self.flat.params)):
            mu = self.means.mu(p) if self.means is not None and p.grad is not None else None
            rows = torch.nonzero(mu[:, 0]).squeeze(1) if mu is not None and mu.dim() == 2 and mu.shape[1] == 1 \
                else None  # an embedding: only the batch's rows have mu > 0
            if compact and rows is not None:
                sparse.append((i, p, mu, rows))
                continue
            out = self._scores[end:end + p.numel()].view_as(p) if compact else view
            space.append((i, end, None, 0))
            end += p.numel()
            if p.grad is None:
                out.zero_()
            elif rows is not None:
                out.zero_()
                out[rows] = _row_scores(p, mu, rows)
            else:
                torch.mul(p.grad, p, out=out)
                if mu is not None:
                    out.mul_(mu.to(out.dtype))
                out.square_()
        for i, p, mu, rows in sparse:
            width = p[0].numel()
            self._scores[end:end + rows.numel() * width].view(-1, width).copy_(_row_scores(p, mu, rows))
            space.append((i, end, rows, width))
            end += rows.numel() * width
        if compact and end < self.k:  # too few elements to choose k from: the full layout
            return self.importance_sq()
        self.space = space if compact else None
        return self._scores[:end]

    def split(self, index: torch.Tensor) -> list[torch.Tensor]:
        """Indices into the last `importance_sq` result (or the flat layout) -> per-candidate local flat indices.
        Every selection function returns its indices ascending; others are sorted here."""
        if self.space is None:
            return self.flat.split(index)
        if index.numel() > 1 and not bool((index[1:] > index[:-1]).all()):  # (a check costs a tenth of a sort)
            index = index.sort().values
        local: list[torch.Tensor] = [index[:0]] * len(self.flat.params)
        for (i, _, rows, width), piece in zip(self.space, split_at(index, [start for _, start, _, _ in self.space])):
            local[i] = piece if rows is None else rows[torch.div(piece, width, rounding_mode="floor")] * width \
                + piece % width
        return local

    @torch.no_grad()
    def before_step(self) -> None:
        scores = self.importance_sq(compact=True) if self.scored else None
        index = self.select(scores, self)
        if index is not None and self.space is not None and bool((scores[index] == 0).any()):
            # Fewer than k positive scores: the selection then includes zero-score elements, which must be drawn
            # from every candidate, as without compaction.
            index = self.select(self.importance_sq(), self)
        self.steps += 1
        if self.means is not None:
            self.means.reset()
        if index is None:  # dense step
            if self.optimizer is not None:
                self.optimizer.selected = {}
            return
        local = self.split(index)
        if self.optimizer is not None:  # masked_step: what moves; masked_grad: what weight decay reaches
            self.optimizer.selected = dict(zip(self.flat.params, local))
        if self.update == "masked_step":
            return
        for p, idx in zip(self.flat.params, local):
            if p.grad is not None:
                keep_only(p.grad, idx)


def _row_scores(p: nn.Parameter, mu: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return torch.mul(p.grad[rows].float(), p[rows].float()).mul_(mu[rows].float()).square_()  # as the float32 buffer


@register("stoc_tuning", options=MaskedOptions, validate=validate_masked)
def stoc_tuning(model, options: MaskedOptions) -> MaskedStep:
    return MaskedStep(model, options, lambda scores, h: sample_without_replacement(scores, h.k, h.generator),
                      "stochastic")


@register("top_tuning", options=MaskedOptions, validate=validate_masked)
def top_tuning(model, options: MaskedOptions) -> MaskedStep:
    return MaskedStep(model, options, lambda scores, h: topk_indices(scores, h.k), "top")


@register("random_tuning", options=MaskedOptions, validate=validate_masked)
def random_tuning(model, options: MaskedOptions) -> MaskedStep:
    return MaskedStep(model, options, lambda scores, h: uniform_indices(h.flat.n, h.k, h.generator,
                                                                        h.flat.params[0].device), "uniform", scored=False)
