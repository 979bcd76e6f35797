"""Parameter anatomy shared by methods and reports: which layer group and kind a parameter belongs to."""

from __future__ import annotations

import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

_LAYER = re.compile(r"\.layer\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """Encoder layer index of a parameter name (works through peft's wrappers), None outside the layers."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def is_head(name: str) -> bool:
    return "classifier" in name


def is_bias(name: str) -> bool:
    return name.endswith(".bias") and "lora_" not in name


def no_decay(name: str) -> bool:
    """Biases and LayerNorm weights get no weight decay (the run_glue / BERT convention)."""
    return name.endswith(("bias", "LayerNorm.weight", "layer_norm.weight"))


def is_bitfit_param(name: str) -> bool:
    """BitFit's set: encoder biases (LayerNorm biases included) and the embeddings' LayerNorm bias; no pooler."""
    if not is_bias(name) or ".pooler." in name:
        return False
    return layer_of(name) is not None or ".embeddings.LayerNorm." in name


def group_of(name: str) -> str:
    layer = layer_of(name)
    if layer is not None:
        return f"layer.{layer:02d}"
    if is_head(name):
        return "head"
    if ".embeddings." in name:
        return "embeddings"
    if ".pooler." in name:
        return "pooler"
    return "other"


def kind_of(name: str) -> str:
    if "lora_" in name:
        return "lora"
    if "LayerNorm" in name:
        return "layernorm." + name.rsplit(".", 1)[-1]
    return name.rsplit(".", 1)[-1]


# A fixed subset re-parametrises a selected weight's trained entries as "<module>.weight_selected"
# (spafit_exp/ops/sparse_grad.py): copies of k entries of the model, trained in their place.
SELECTED_VALUES = "weight_selected"


def is_selected_values(name: str) -> bool:
    return name.endswith(SELECTED_VALUES)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) where total counts the base model once (LoRA factors are extra trainable tensors; a fixed
    subset's selected values stand for entries the total already counts)."""
    trainable = total = 0
    for name, p in model.named_parameters():
        if not is_selected_values(name):
            total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


@dataclass(frozen=True)
class ParamCounts:
    """A method's parameter counts (`Method.counts`), typed: what results.json's `params`, the run's header and the
    dry run's summary line report. Element-level methods count elements, not the tensors that hold them."""

    trainable: int  # elements one optimizer step may update
    total: int  # the base model counted once (`count_params`)
    dense_trainable: int | None = None  # per-step selection: elements that may train over the run
    selected: int | None = None  # element-level subsets: k elements ...
    candidates: int | None = None  # ... of n candidates

    @property
    def fraction(self) -> float:
        return self.trainable / self.total

    def record(self) -> dict:
        """results.json's `params` (`dense_trainable` only where a method has one, as records always had it)."""
        dense = {} if self.dense_trainable is None else {"dense_trainable": self.dense_trainable}
        return {"trainable": self.trainable, "total": self.total, "fraction": self.fraction, **dense}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor, as a host copy: what a run keeps of its best epoch unless its method says otherwise."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze(model: nn.Module, predicate) -> None:
    for name, p in model.named_parameters():
        if predicate(name):
            p.requires_grad_(True)


def report(model: nn.Module, counts: ParamCounts | None = None) -> str:
    """A table of trainable / total parameters per layer group and kind, ending with the one-line summary: of
    `counts` (the method's, `Method.counts`) when given, else of the tensors that require grad. The table shows
    tensors; an element-level method's summary counts elements, with its k of n and dense count noted above it."""
    rows: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for name, p in model.named_parameters():
        cell = rows[group_of(name)][kind_of(name)]
        cell[0] += p.numel() if p.requires_grad else 0
        cell[1] += p.numel()
    kinds = sorted({k for g in rows.values() for k in g})
    header = ["group"] + kinds + ["trainable", "total"]
    lines = [header]
    for group in sorted(rows, key=_group_order):
        cells = rows[group]
        lines.append([group] + [f"{cells[k][0]:,}" if k in cells else "" for k in kinds]
                     + [f"{sum(c[0] for c in cells.values()):,}", f"{sum(c[1] for c in cells.values()):,}"])
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(header))]
    text = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in lines]
    counts = ParamCounts(*count_params(model)) if counts is None else counts
    text.append("(cells: trainable parameters per kind)")
    if counts.selected is not None:
        text.append(f"selected elements: {counts.selected} of {counts.candidates} candidates")
    if counts.dense_trainable is not None:  # per-step selection: any element may train, one step updates `trainable`
        text.append(f"dense_trainable={counts.dense_trainable} (trainable_params: elements one step updates)")
    text.append(f"trainable_params={counts.trainable} total_params={counts.total}")
    return "\n".join(text)


def _group_order(group: str) -> tuple[int, str]:
    order = {"embeddings": 0, "pooler": 2, "head": 3, "other": 4}
    return (order.get(group, 1), group)


@contextmanager
def restored(model: nn.Module):
    """Run a side training (decoder pre-tuning, diff pruning's fine-tune) and leave the model as it was: every
    tensor and every requires_grad flag come back on exit; the caller keeps what it copied out inside."""
    saved = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    try:
        yield model
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(saved[n][0])
                p.requires_grad_(saved[n][1])
