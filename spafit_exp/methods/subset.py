"""Fixed-subset tuning (subset paper): the selection stage (spafit_exp/selection/stage.py, `selector=...`) has already
picked k elements of the encoder; only they train (plus the head), through the same masked update as the per-step
methods, with optimizer state kept for the k elements only. Gradients exist only at the k elements: a selected
Linear weight's are computed there alone (`weight_grad: sampled`, spafit_exp/ops/sparse_grad.py), any other tensor's
are masked, so gradient clipping measures the norm of what trains. The saved artefact is sparse: indices and values of
the trained elements, and the head — enough to rebuild the run's model without selecting again."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING

from spafit_exp.core.errors import ConfigError
from spafit_exp.methods import Method, MethodOptions, ParamCounts, Selection, register
from spafit_exp.methods.subnetwork import check_candidates
from spafit_exp.ops import sparse_grad
from spafit_exp.ops.masking import FlatParams, candidate_params
from spafit_exp.ops.optim import masked_adamw
from spafit_exp.ops.params import count_params, freeze_all, is_head, unfreeze


@dataclass
class SubsetOptions(MethodOptions):
    candidates: str = MISSING  # encoder | no_embeddings
    weight_grad: str = MISSING  # sampled | dense: how a selected Linear weight's gradient is computed


WEIGHT_GRADS = ("sampled", "dense")


def sparse_state(model: torch.nn.Module, flat: FlatParams, local: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Indices + values of the trainable elements (`<name>.__idx`, `<name>.__val`), dense head tensors."""
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if is_head(n)}
    for name, p, idx in zip(flat.names, flat.params, local):
        if idx.numel():
            state[f"{name}.__idx"] = idx.cpu().clone()
            state[f"{name}.__val"] = p.detach().reshape(-1)[idx.to(p.device)].cpu().clone()
    return state


def validate_subset(options: SubsetOptions, num_layers: int) -> None:
    check_candidates(options.candidates)
    if options.weight_grad not in WEIGHT_GRADS:
        raise ConfigError(f"method.weight_grad={options.weight_grad}: must be one of {', '.join(WEIGHT_GRADS)}")


class FixedSubset(Method):
    """The k selected elements and the head train, through masked AdamW (state for the k only); what is saved is
    sparse. `local`: the selection as per-candidate flat indices; `fixed`: what the optimizer updates, by tensor
    (both None on the meta device: sizes only)."""

    def __init__(self, model, info: dict, flat: FlatParams, k: int, head_size: int, local=None, fixed=None,
                 evaluate_only: bool = False):
        super().__init__(model, info)
        self.flat, self.k, self.head_size, self.local, self.fixed = flat, k, head_size, local, fixed
        self.evaluate_only = evaluate_only

    def counts(self) -> ParamCounts:
        return ParamCounts(self.k + self.head_size, count_params(self.model)[1], selected=self.k,
                           candidates=self.flat.n)

    def make_optimizer(self, trainer) -> torch.optim.Optimizer:
        return sparse_grad.keep_in_sync(masked_adamw(self.model, trainer, fixed=self.fixed), self.model)

    def export_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return sparse_state(model, self.flat, self.local)

    def import_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """`sparse_state`'s entries scattered back into their tensors; the dense ones (the head) as any method's."""
        own = dict(model.named_parameters())
        for name, index in state.items():
            if name.endswith(".__idx"):
                base = name.removesuffix(".__idx")
                target = own[base].data.view(-1)
                target[index.to(target.device)] = state[f"{base}.__val"].to(target.device, target.dtype)
        super().import_state(model, {n: t for n, t in state.items() if not n.endswith((".__idx", ".__val"))})
        sparse_grad.read_back(model)


@register("subset", options=SubsetOptions, validate=validate_subset, needs_selection=True)
def subset(model, options: SubsetOptions, selection: Selection) -> FixedSubset:
    flat = FlatParams(candidate_params(model, options.candidates))
    head_size = sum(p.numel() for n, p in model.named_parameters() if is_head(n))
    freeze_all(model)
    unfreeze(model, is_head)
    info = {**selection.info, "k": selection.k, "n": flat.n, "trainable": selection.k + head_size}
    if selection.index is None:  # dry run on the meta device: sizes only
        return FixedSubset(model, info, flat, selection.k, head_size)
    own = dict(model.named_parameters())
    local = flat.split(selection.index)
    with torch.no_grad():
        for name, tensor in selection.head.items():
            own[name].copy_(tensor)
        if selection.delta is not None:  # the pruned model: theta0 + the kept differences
            for p, idx, d in zip(flat.params, local, flat.split_values(selection.index, selection.delta)):
                p.view(-1)[idx.to(p.device)] += d.to(p.device, p.dtype)
    fixed = {}
    for p, idx in zip(flat.params, local):
        if idx.numel():
            p.requires_grad_(True)
            fixed[p] = idx.to(p.device)
    masked = fixed
    if not selection.evaluate_only:  # gradients of the selected elements only (clipping sees what trains)
        if options.weight_grad == "sampled":
            installed = sparse_grad.install(model, fixed)
            masked = installed.masked
            info.update(sampled_linears=installed.linears, sampled_embeddings=installed.embeddings)
        else:
            for p, idx in fixed.items():
                sparse_grad.mask_gradient(p, idx)

    return FixedSubset(model, info, flat, selection.k, head_size, local, masked, selection.evaluate_only)
