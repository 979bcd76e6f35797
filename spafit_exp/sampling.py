"""Weighted sampling of k of n elements without replacement, on the weights' device, in torch.

Successive sampling (draw one element with probability proportional to its weight among those not yet drawn,
k times) is what `numpy.random.choice(n, k, replace=False, p=w/w.sum())` does. It is equivalent to drawing
i.i.d. from the weights *restricted to the elements not yet taken* and discarding repeats, in draw order; so we
draw in batches from the restricted distribution and keep each round's new distinct elements in
first-occurrence order. Exact, whatever the batch size.

Speed without an O(n) cumulative sum: the weights are cut into chunks of about sqrt(n / k) elements; one pass sums each
chunk (float64), a draw picks a chunk by a search over the chunk totals, then an element inside it from the
cumulative sum of just that chunk (float64, gathered per draw). Taken elements are masked out of their chunk
and its total is recomputed, so every round samples the restricted distribution. Precision: the one pass over
all n weights sums each chunk in the weights' dtype (float32: relative error ~1e-6 on a chunk's probability);
chunk cumulative sums and within-chunk sums are float64. `torch.multinomial`
is not used: it caps categories at 2^24.
"""

from __future__ import annotations

import torch


def _chunk_size(n: int, k: int) -> int:
    """Balances the two costs: n / chunk totals to sum and search, k * chunk weights to gather per round."""
    size = 16
    while size * size * k < n and size < 4096:
        size *= 2
    return size


def _first_occurrences(draws: torch.Tensor) -> torch.Tensor:
    """Distinct values of `draws` in the order they first appear."""
    if draws.numel() == 0:
        return draws
    values, order = torch.sort(draws, stable=True)
    first = torch.ones_like(values, dtype=torch.bool)
    first[1:] = values[1:] != values[:-1]
    positions = order[first]
    return draws[positions.sort().values]


def _rand(shape, generator, device, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def sample_without_replacement(weights: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k distinct indices into `weights.view(-1)` by successive sampling proportional to the weights.

    Returned in draw order (the first is the first element drawn). Weights must be finite and >= 0. When fewer
    than k weights are positive, all positive ones are returned first, then zero-weight indices uniformly."""
    w = weights.detach().reshape(-1)
    n, device = w.numel(), w.device
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be in [0, {n}]")
    if k == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    positive = int(torch.count_nonzero(w))  # weights are >= 0, so non-zero means positive
    if positive <= k:
        chosen = torch.nonzero(w > 0).reshape(-1)
        chosen = chosen[torch.randperm(chosen.numel(), generator=generator, device=device)] if positive else chosen
        rest = uniform_indices(n - positive, k - positive, generator, device)
        zeros = torch.nonzero(w <= 0).reshape(-1)[rest]
        return torch.cat([_successive_order(w, chosen, generator), zeros])

    CHUNK = _chunk_size(n, k)
    n_chunks = (n + CHUNK - 1) // CHUNK
    offsets = torch.arange(CHUNK, device=device)
    taken = torch.zeros(n, dtype=torch.bool, device=device)
    full = (n // CHUNK) * CHUNK
    totals = torch.zeros(n_chunks, dtype=torch.float64, device=device)
    if full:
        totals[: n // CHUNK] = w[:full].view(-1, CHUNK).sum(1)  # float32 pass: 10x faster than a float64 one
    if full < n:
        totals[-1] = w[full:].sum(dtype=torch.float64)

    def chunk_rows(chunks: torch.Tensor) -> torch.Tensor:
        """Weights of the given chunks as float64 rows, taken elements and padding zeroed."""
        idx = chunks.unsqueeze(1) * CHUNK + offsets
        inside = idx < n
        idx = idx.clamp_(max=n - 1)
        rows = w[idx].to(torch.float64)
        return rows.masked_fill_(~inside | taken[idx], 0.0)

    result: list[torch.Tensor] = []
    have = 0
    while have < k:
        need = k - have
        m = need + need // 4 + 16
        cdf = torch.cumsum(totals, 0)
        u = _rand(m, generator, device) * cdf[-1]
        chunks = torch.searchsorted(cdf, u, right=True).clamp_(max=n_chunks - 1)
        rows_cdf = torch.cumsum(chunk_rows(chunks), 1)
        r = _rand((m, 1), generator, device) * rows_cdf[:, -1:]
        pos = torch.searchsorted(rows_cdf, r, right=True).clamp_(max=CHUNK - 1).squeeze(1)
        draws = chunks * CHUNK + pos
        fresh = _first_occurrences(draws)[:need]
        result.append(fresh)
        have += fresh.numel()
        taken[fresh] = True
        touched = torch.unique(torch.div(fresh, CHUNK, rounding_mode="floor"))
        totals[touched] = chunk_rows(touched).sum(1)
    return torch.cat(result)


def _successive_order(w: torch.Tensor, chosen: torch.Tensor, generator) -> torch.Tensor:
    """All positive-weight indices in a successive-sampling order (used when k covers every one of them)."""
    if chosen.numel() <= 1:
        return chosen
    order = sample_without_replacement(w[chosen], chosen.numel() - 1, generator)
    last = torch.ones(chosen.numel(), dtype=torch.bool, device=w.device)
    last[order] = False
    return chosen[torch.cat([order, torch.nonzero(last).reshape(-1)])]


def topk_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores (Top Tuning, fixed top-k selectors)."""
    return torch.topk(scores.reshape(-1), k, sorted=False).indices


def uniform_indices(n: int, k: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """k distinct indices of [0, n) uniformly, without the O(n) cost of a full permutation when k << n."""
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be in [0, {n}]")
    if k * 4 >= n:
        return torch.randperm(n, generator=generator, device=device)[:k]
    result = torch.empty(0, dtype=torch.long, device=device)
    while result.numel() < k:
        need = k - result.numel()
        draws = torch.randint(n, (need + need // 8 + 16,), generator=generator, device=device)
        merged = _first_occurrences(torch.cat([result, draws]))
        result = merged[:k]
    return result
