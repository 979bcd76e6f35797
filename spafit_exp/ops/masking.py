"""Element-level sub-networks: the candidate tensors laid end to end as one flat index space (`FlatParams`,
offsets only, no copy of the weights), which candidates a method may touch, and the one rule for the size k of
a sub-network (per-step methods and fixed-subset selectors alike). The masked optimizer is in optim.py."""

from __future__ import annotations

import torch
from torch import nn

from spafit_exp.ops.params import is_bitfit_param, is_head, is_selected_values


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
        return split_at(flat_index.sort().values, self.offsets[:-1])

    def split_values(self, flat_index: torch.Tensor, values: torch.Tensor) -> list[torch.Tensor]:
        """`values[i]` belongs to `flat_index[i]`: per-tensor pieces in the order `split` returns the indices."""
        order = flat_index.argsort()
        sorted_index = flat_index[order]
        cuts = torch.searchsorted(sorted_index, self._bounds.to(flat_index.device))
        return list(torch.tensor_split(values[order], cuts.cpu()))

    def buffer(self, dtype=torch.float32) -> torch.Tensor:
        device = self.params[0].device if self.params else "cpu"
        return torch.empty(self.n, dtype=dtype, device=device)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [flat[a:b].view_as(p) for a, b, p in zip(self.offsets[:-1], self.offsets[1:], self.params)]


def split_at(index: torch.Tensor, starts: list[int]) -> list[torch.Tensor]:
    """Ascending indices -> for each segment [starts[i], starts[i + 1]) (the last one open) its indices minus
    starts[i]."""
    cuts = torch.searchsorted(index, torch.tensor(starts[1:], dtype=torch.long, device=index.device))
    return [piece - start for piece, start in zip(torch.tensor_split(index, cuts.cpu()), starts)]


def keep_only(grad: torch.Tensor, flat_index: torch.Tensor) -> None:
    """Zero `grad` in place except at `flat_index` (local flat indices): one write pass, no mask tensor."""
    flat = grad.view(-1)
    kept = flat[flat_index]
    flat.zero_()
    flat[flat_index] = kept


CANDIDATES = ("encoder", "no_embeddings")


def candidate_params(model: nn.Module, which: str = "encoder") -> list[tuple[str, nn.Parameter]]:
    """`encoder` (default): every non-head parameter; `no_embeddings` drops the embeddings."""
    if which not in CANDIDATES:
        raise ValueError(f"candidates={which}: must be one of {', '.join(CANDIDATES)}")
    return [(n, p) for n, p in model.named_parameters() if not is_head(n) and not is_selected_values(n)
            and not (which == "no_embeddings" and ".embeddings." in n)]


def subnetwork_size(k: int | None, fraction: float | None, n: int, default: int) -> int:
    """`k`, else `fraction` of the n candidates, else `default` (the model's BitFit size). ValueError `k=...` when
    the size is not in [1, n]: callers prefix the config group that set it (`method.` / `selector.`)."""
    if k is not None:
        size = int(k)
    elif fraction is not None:
        size = int(round(float(fraction) * n))
    else:
        size = int(default)
    if not 1 <= size <= n:
        raise ValueError(f"k={size}: must be in [1, {n}] (the number of candidate elements)")
    return size


def bitfit_size(model: nn.Module) -> int:
    """Encoder biases + embeddings LayerNorm bias, no pooler, no head: the papers' default sub-network size."""
    return sum(p.numel() for name, p in model.named_parameters() if is_bitfit_param(name))


def bitfit_indices(flat: FlatParams) -> torch.Tensor:
    """Flat indices of the BitFit elements among the candidates."""
    parts = [torch.arange(a, b) for name, a, b in zip(flat.names, flat.offsets[:-1], flat.offsets[1:])
             if is_bitfit_param(name)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
