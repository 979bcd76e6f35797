"""Index selection for the masked-gradient methods, in torch, on the scores' device.

- `topk_indices(scores, k)`: the k largest (Top Tuning, subset selectors).
- `uniform_indices(n, k)`: k distinct indices uniformly (Random Tuning, the random selector).
- Weighted sampling without replacement (Stochastic Tuning) is in `spafit_exp.ops.successive`.

Both return int64 indices in ascending order, on the device of their input (`device` for `uniform_indices`). A
`generator`, when given, must live on that device. Several tensors: write the scores into one flat buffer
(`masking.FlatParams.buffer()` / `.views()`, reused every step, so no copy of the weights is made) and map the
flat indices back with `FlatParams.split`."""

from __future__ import annotations

import math

import numpy as np
import torch


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest of `scores.reshape(-1)`, ascending (ties broken by torch.topk). Exact but cheap
    for k << n (Top Tuning, every step): a strided sample's threshold keeps a few times k candidates; if at least k
    pass it, the k-th largest is >= it, so they hold the whole top k; else the full topk runs."""
    flat = scores.detach().reshape(-1)
    n = flat.numel()
    check_k(n, k)
    if k * 64 > n or n < 1 << 20:
        return torch.sort(torch.topk(flat, k, sorted=False).indices).values
    threshold = sampled_threshold(flat, 2 * k, 32)
    candidates = at_least(flat, threshold)
    if candidates.numel() < k:  # an unlucky sample
        candidates = torch.arange(n, device=flat.device)
    return torch.sort(candidates[torch.topk(flat[candidates], k, sorted=False).indices]).values


def sampled_threshold(flat: torch.Tensor, count: int, slack: int) -> torch.Tensor:
    """A value about `count` of `flat`'s elements reach: the (count-scaled + slack)-th largest of a strided sample of
    ~65k elements (a sample that misses a tail only moves the cost, callers stay exact)."""
    n = flat.numel()
    sample = flat[:: max(1, n // (1 << 16))]
    rank = min(sample.numel(), max(1, math.ceil(count * sample.numel() / n)) + slack)
    return torch.topk(sample, rank, sorted=False).values.min()


def at_least(flat: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Ascending int64 indices where flat >= threshold. On CPU through NumPy: `np.flatnonzero` is ~15x faster
    than `torch.nonzero` over tens of millions of elements (measured, 1 thread), the bulk of Top Tuning's step."""
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64) and flat.is_contiguous():
        values = flat.numpy()
        return torch.from_numpy(np.flatnonzero(values >= values.dtype.type(threshold.item())))
    return torch.nonzero(flat >= threshold).squeeze(1)


def uniform_indices(n: int, k: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """k distinct indices of [0, n) uniformly at random, ascending, in O(k) memory when k << n."""
    check_k(n, k)
    if k * 4 >= n:
        return torch.sort(torch.randperm(n, generator=generator, device=device)[:k]).values
    taken = torch.empty(0, dtype=torch.long, device=device)
    while taken.numel() < k:
        need = k - taken.numel()
        draws = torch.randint(n, (need + need // 8 + 64,), generator=generator, device=device)
        new = torch.unique(draws)  # sorted, distinct
        if taken.numel():
            new = new[~torch.isin(new, taken)]
        if new.numel() > need:  # any `need` of them, chosen uniformly, keep the sample uniform
            pick = torch.randperm(new.numel(), generator=generator, device=device)[:need]
            new = new[pick]
        taken = torch.sort(torch.cat([taken, new])).values
    return taken


def check_k(n: int, k: int) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be in [0, {n}]")


class DeviceGenerator:
    """A seeded `torch.Generator` made on the device of its first use. A method is prepared on the host and the
    loop moves the model to the accelerator afterwards (`accelerator.prepare`); a generator must live on the device
    of the tensors it draws for, so it cannot be made at preparation time. A state loaded before the first draw (a
    resume) is applied when the generator is made."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._generator: torch.Generator | None = None
        self._pending: torch.Tensor | None = None

    def on(self, device: torch.device | str) -> torch.Generator:
        device = torch.device(device)
        if device.type == "meta":  # a dry run: nothing is drawn, the host's generator stands in
            device = torch.device("cpu")
        if self._generator is None:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._pending is not None:
                self._generator.set_state(self._pending)
                self._pending = None
        elif self._generator.device.type != device.type:
            raise ValueError(f"the sampler's generator lives on {self._generator.device}, the tensors on {device}")
        return self._generator

    def get_state(self) -> torch.Tensor | None:
        """None before the first draw (the seed alone says it)."""
        return self._generator.get_state() if self._generator is not None else self._pending

    def set_state(self, state: torch.Tensor | None) -> None:
        if state is None:
            return
        if self._generator is None:
            self._pending = state
        else:
            self._generator.set_state(state)
