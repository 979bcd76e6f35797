"""Successive sampling of k of n elements (Stochastic Tuning, p = I^2 / sum I^2): draw one element with
probability proportional to its weight among those not drawn yet, k times. Same distribution as
`numpy.random.choice(n, k, replace=False, p=w / w.sum())`, in torch, on the weights' device.

It is an exponential race: element i's key is E_i / w_i (E_i ~ Exp(1)), the k smallest keys are the sample;
equivalently the first k distinct elements of an i.i.d. stream from p (each element's first arrival in a Poisson
process of rate w_i). Two exact ways to run it without n random numbers (docs/sampling.md: proofs, speed):
- *heavy / light split* (a few elements hold most of the mass, as in a real step's I^2): the ~1.25k heaviest
  {w_i >= t} get explicit keys, whose k-th smallest B bounds the sample's; the light elements' keys below B are
  N ~ Poisson(B * W_L) i.i.d. draws from the light weights at uniform times on [0, B);
- *rounds of i.i.d. draws* (everything else): an element drawn c times in a round arrives first at an Exp(c)
  time, so a round with more new elements than needed keeps the smallest Exp(1) / c; taken elements are removed
  and another round drawn; after `MAX_ROUNDS` rounds, an explicit race over what remains.
Draws find their chunk (C ~ sqrt(n / k) weights, summed in one float32 pass; float64 for float64 weights)
through the cumulative chunk totals, then their element inside it, in float64. Zero weights are never drawn.
`torch.multinomial` is not used: it caps categories at 2^24.
"""

from __future__ import annotations

import contextlib
import math

import torch

from spafit_exp.ops.sampling import at_least, check_k, sampled_threshold, uniform_indices

# CPU: intra-op threads while sampling (None: torch's setting). After the one pass over the weights the work
# is many small ops; on shared cores each parallel one can wait milliseconds for a busy thread.
CPU_THREADS: int | None = 1
MAX_ROUNDS = 32  # rounds of i.i.d. draws before the exponential-race fallback
HEAVY_MIN_N = 1 << 20  # smaller inputs: rounds only (the split's fixed costs do not pay)
HEAVY_SIZE = 1.25  # the heavy set holds about this many times k elements (measured best on a real step)
HEAVY_MAX_DRAWS = 4  # the split runs when the light elements' expected draws are at most this many times k
HEAVY_MAX_SIZE = 8  # ... and at most this many times k elements reach the threshold (ties, flat weights)
_HALF_SLICE = 1 << 22  # float16 / bfloat16 weights are summed in float32 this many elements at a time
_ROW_BATCH = 1 << 18  # CPU: draws are resolved inside their chunks this many weights at a time (cache-sized)
_ROW_BATCH_GPU = 1 << 24  # the same on a GPU (bounds the temporary rows to ~200 MB)
_CHUNK_BIAS = 1  # chunk size: the power of two >= sqrt(n / (k * _CHUNK_BIAS)), measured best on CPU


def sample_without_replacement(weights: torch.Tensor, k: int,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """k distinct indices into `weights.reshape(-1)` by successive sampling proportional to the weights.

    `weights`: any floating dtype (float16 / bfloat16 / float32 / float64), any shape, on any device; they are
    read, never copied whole (a non-contiguous tensor is made contiguous once by `reshape`) nor moved to the
    host. Returns an int64 tensor of the indices in ascending order, on `weights.device`. Weights must be
    finite and >= 0: a non-finite total or a negative chunk sum raises ValueError (an isolated negative weight
    is not detected). When at most k weights are positive, every positive index is returned together with
    k - (positive count) zero-weight indices drawn uniformly; all-zero weights give a uniform sample. On CPU
    everything after the pass over the weights runs with `CPU_THREADS` intra-op threads."""
    if not torch.is_floating_point(weights):
        raise TypeError(f"weights must be a floating-point tensor, got {weights.dtype}")
    w = weights.detach().reshape(-1)
    n, device = w.numel(), w.device
    check_k(n, k)
    if k == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    chunks = _Chunks(w, _chunk_size(n, k))  # the one pass over all weights: torch's threads (a single large op)
    with _cpu_threads(device):
        return _successive(w, k, generator, chunks)


def _successive(w: torch.Tensor, k: int, generator, chunks: "_Chunks") -> torch.Tensor:
    if bool(chunks.sums.min() < 0):
        raise ValueError("weights must be >= 0 (a chunk of them sums to a negative number)")
    if not bool(torch.isfinite(chunks.sums.sum(dtype=torch.float64))):
        raise ValueError("weights must be finite (their sum is not)")
    if int(torch.count_nonzero(chunks.sums)) <= k:  # few positive chunks: few positive weights, maybe <= k
        if int(torch.count_nonzero(w)) <= k:
            return _all_positive_plus_uniform(w, k, generator)
    t = _heavy_threshold(w, k)
    heavy = _heavy_set(k, chunks, t) if t is not None else None
    if heavy is not None:
        return _split_race(chunks, k, *heavy, generator)
    parts: list[torch.Tensor] = []
    cdf, need, draws = chunks.cdf(), k, k + k // 8 + 64
    for _ in range(MAX_ROUNDS):
        new, distinct = _round(chunks, cdf, draws, need, generator)
        parts.append(new)
        need -= new.numel()
        if need == 0:
            break
        chunks.remove(new)
        cdf = chunks.cdf()
        # Next round sized from this one's yield, at most 2 * need draws: on heavy-tailed weights (a real step's I^2:
        # the top k hold 99.8% of the mass) the first yield hugely underestimates the next once the heavy elements
        # are gone; several small rounds then cost 2.4x less than one big one (measured, docs/sampling.md).
        draws = min(int(need * draws / distinct * 1.1) + 64, 2 * need + 4096)
    else:
        taken = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long, device=w.device)
        parts.append(_race(w, taken, need, generator))
    return parts[0] if len(parts) == 1 else torch.sort(torch.cat(parts)).values


@contextlib.contextmanager
def _cpu_threads(device: torch.device):
    """On CPU, run with at most `CPU_THREADS` intra-op threads (restored afterwards)."""
    before = torch.get_num_threads()
    if device.type != "cpu" or CPU_THREADS is None or before <= CPU_THREADS:
        yield
        return
    torch.set_num_threads(CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _chunk_size(n: int, k: int) -> int:
    """Power of two near sqrt(n / k), within [16, 1024] and at most n: balances the per-round cost over
    the n / C chunk totals against the one over the k * C weights of the chunks hit."""
    size = 16
    while size * size * k * _CHUNK_BIAS < n and size < 1024:
        size *= 2
    while size > n:
        size //= 2
    return max(size, 1)


class _Chunks:
    """The weights as rows of `size` elements (the last one zero-padded) and their totals.

    `sums` are the rows' sums from one pass over the weights (float32, float64 for float64 weights). Rows from
    which elements were removed are kept as small copies (`saved`, found through `slot`) with exact float64
    totals in `totals`, so the weights themselves are never written."""

    def __init__(self, w: torch.Tensor, size: int):
        self.size, self.n = size, w.numel()
        full = self.n // size
        self.body = w[: full * size].view(full, size)
        acc = torch.float64 if w.dtype == torch.float64 else torch.float32
        self.sums = torch.empty(-(-self.n // size), dtype=acc, device=w.device)
        if w.dtype == acc:
            torch.sum(self.body, 1, out=self.sums[:full])
        else:  # float16 / bfloat16: sum in float32 a slice at a time, no float32 copy of all the weights
            step = max(_HALF_SLICE // size, 1)
            for i in range(0, full, step):
                end = min(i + step, full)
                torch.sum(self.body[i:end].to(acc), 1, out=self.sums[i:end])
        self.tail = None
        if full < self.sums.numel():
            self.tail = w.new_zeros(size)
            self.tail[: self.n - full * size] = w[full * size:]
            self.sums[full] = self.tail.sum(dtype=acc)
        self.totals: torch.Tensor | None = None  # float64 sums of the restricted rows, once any were removed
        self.slot: torch.Tensor | None = None
        self.saved: torch.Tensor | None = None
        self.cap: torch.Tensor | None = None  # weights >= cap count as 0 (the light part of a heavy / light split)

    def cdf(self) -> torch.Tensor:
        """Cumulative chunk totals, float64."""
        if self.totals is None:  # (a copy then an in-place cumsum: cumsum(dtype=) is several times slower)
            cdf = torch.empty(self.sums.shape, dtype=torch.float64, device=self.sums.device)
            return cdf.copy_(self.sums).cumsum_(0)
        return torch.cumsum(self.totals, 0)

    def rows(self, ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Current (restricted) weights of chunks `ids`, in the weights' dtype (into `out` if given)."""
        full = self.body.shape[0]
        body_ids = ids.clamp(max=full - 1) if self.tail is not None else ids
        out = torch.index_select(self.body, 0, body_ids, out=out)
        if self.tail is not None:
            out[ids == full] = self.tail
        if self.slot is not None:
            slot = self.slot[ids]
            hit = slot >= 0
            out[hit] = self.saved[slot[hit]]
        if self.cap is not None:
            out.masked_fill_(out >= self.cap, 0)
        return out

    def remove(self, elements: torch.Tensor) -> None:
        """Zero the weights of `elements` (ascending) from now on and update their chunks' totals."""
        chunk = torch.div(elements, self.size, rounding_mode="floor")
        ids, inverse = torch.unique_consecutive(chunk, return_inverse=True)
        rows = self.rows(ids)
        rows[inverse, elements - chunk * self.size] = 0
        if self.totals is None:
            self.totals = self.sums.to(torch.float64)
            self.slot = torch.full(self.sums.shape, -1, dtype=torch.long, device=ids.device)
            self.saved = rows[:0]
        self.totals[ids] = rows.sum(1, dtype=torch.float64)
        slot = self.slot[ids]
        old = slot >= 0
        self.saved[slot[old]] = rows[old]
        fresh = ids[~old]
        self.slot[fresh] = torch.arange(self.saved.shape[0], self.saved.shape[0] + fresh.numel(),
                                        device=ids.device)
        self.saved = torch.cat([self.saved, rows[~old]])


def _round(chunks: _Chunks, cdf: torch.Tensor, m: int, need: int, generator) -> tuple[torch.Tensor, int]:
    """m i.i.d. draws from the current weights; returns (new elements ascending, number of distinct draws).

    Keeps all distinct draws if there are at most `need`, else the `need` that come first in a uniformly
    random order of the draws (smallest Exp(1) / count). `cdf`: cumulative chunk totals, float64."""
    elements, counts = _draws(chunks, cdf, m, generator)
    distinct = elements.numel()
    if distinct > need:
        first = torch.empty(distinct, dtype=torch.float64, device=cdf.device).exponential_(generator=generator)
        pick = torch.topk(first.div_(counts), need, largest=False, sorted=False).indices
        keep = torch.zeros(distinct, dtype=torch.bool, device=cdf.device)
        keep[pick] = True
        elements = elements[keep]
    return elements, distinct


def _draws(chunks: _Chunks, cdf: torch.Tensor, m: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """m i.i.d. draws from the current weights: (distinct elements ascending, how often each was drawn)."""
    device, total = cdf.device, cdf[-1:]
    last = torch.searchsorted(cdf, total)  # the last chunk of positive mass
    spacing = torch.empty(m + 1, dtype=torch.float64, device=device).exponential_(generator=generator)
    spacing = torch.cumsum(spacing, 0)
    u = spacing[:m].mul_(total / spacing[m])  # sorted uniforms on [0, total)
    chunk = torch.minimum(torch.searchsorted(cdf, u, right=True), last)  # (rounding at the top end)
    before = torch.where(chunk > 0, cdf.index_select(0, (chunk - 1).clamp_(min=0)), 0.0)
    share = (u - before).div_(cdf.index_select(0, chunk) - before)  # uniform on [0, 1) inside the chunk
    elements = torch.empty(m, dtype=torch.long, device=device)
    per_batch = _ROW_BATCH if device.type == "cpu" else _ROW_BATCH_GPU  # CPU: cache-sized
    batch = min(m, max(1024, per_batch // chunks.size))
    rows = chunks.body.new_empty((batch, chunks.size))
    cums = torch.empty((batch, chunks.size), dtype=torch.float64, device=device)
    for start in range(0, m, batch):
        ids = chunk[start:start + batch]
        cum = cums[: ids.numel()].copy_(chunks.rows(ids, out=rows[: ids.numel()])).cumsum_(1)
        mass = cum[:, -1]
        r = torch.minimum(share[start:start + batch] * mass, torch.nextafter(mass, torch.zeros_like(mass)))
        col = torch.searchsorted(cum, r.unsqueeze(1), right=True).squeeze(1)  # first cum > r: weight > 0
        torch.add(col, ids, alpha=chunks.size, out=elements[start:start + batch])
    return torch.unique_consecutive(elements, return_counts=True)  # draws are sorted


def _heavy_threshold(w: torch.Tensor, k: int) -> torch.Tensor | None:
    """A weight t that about HEAVY_SIZE * k weights reach (from a strided sample), or None for small inputs."""
    if w.numel() < HEAVY_MIN_N or k * 64 > w.numel():
        return None
    t = sampled_threshold(w, math.ceil(HEAVY_SIZE * k), 16)
    return t if bool(t > 0) else None


def _heavy_set(k: int, chunks: _Chunks, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(indices ascending, float64 weights) of the heavy elements {w_i >= t}, after which `chunks` hold the light
    weights only; or None, `chunks` untouched, where the split does not pay: fewer than k or more than
    HEAVY_MAX_SIZE * k heavy elements, or light elements so heavy in total that they would need more than
    HEAVY_MAX_DRAWS * k expected draws. Decided by the weights alone, never by random numbers: both paths exact."""
    ids = at_least(chunks.sums, t.to(chunks.sums.dtype))  # a rounded sum of weights >= 0 is >= each of them
    if ids.numel() > (HEAVY_MAX_DRAWS + HEAVY_MAX_SIZE) * k:  # flat weights: the chunks without a heavy element
        return None  # (sum >= t each) already hold more light mass than the test below accepts
    rows = chunks.rows(ids)
    hit = at_least(rows.view(-1), t)
    if not k <= hit.numel() <= HEAVY_MAX_SIZE * k:
        return None
    heavy_w = rows.view(-1)[hit].to(torch.float64)
    totals = chunks.sums.to(torch.float64)  # light totals: as precise as the chunk sums (float32 / float64)
    totals[ids] = torch.where(rows < t, rows, 0).sum(1, dtype=chunks.sums.dtype).to(torch.float64)
    if bool(totals.sum() > HEAVY_MAX_DRAWS * k * float(t)):  # ~ the light draws: the keys' bound is ~ 1 / t or less
        return None
    chunks.totals, chunks.cap = totals, t
    return ids[torch.div(hit, chunks.size, rounding_mode="floor")] * chunks.size + hit % chunks.size, heavy_w


def _split_race(chunks: _Chunks, k: int, heavy: torch.Tensor, heavy_w: torch.Tensor, generator) -> torch.Tensor:
    """The exponential race run as heavy keys + light Poisson arrivals below their bound (module docstring)."""
    device = heavy.device
    keys = torch.empty(heavy.numel(), dtype=torch.float64, device=device).exponential_(generator=generator)
    keys.div_(heavy_w)
    bound = torch.kthvalue(keys, k).values  # the heavy elements alone hold k keys <= bound
    cdf = chunks.cdf()
    arrivals = int(torch.poisson((bound * cdf[-1]).reshape(1), generator=generator))
    light, counts = _draws(chunks, cdf, arrivals, generator) if arrivals else (heavy[:0], heavy[:0])
    # A light element drawn c times arrives first at the minimum of c uniform times on [0, bound).
    u = torch.empty(light.numel(), dtype=torch.float64, device=device).uniform_(generator=generator)
    light_keys = torch.log(u).div_(counts).expm1_().neg_().mul_(bound)
    pick = torch.topk(torch.cat([keys, light_keys]), k, largest=False, sorted=False).indices
    return torch.sort(torch.cat([heavy, light])[pick]).values


def _race(w: torch.Tensor, taken: torch.Tensor, need: int, generator) -> torch.Tensor:
    """`need` more elements by successive sampling from w without `taken`: smallest Exp(1) / w_i (float64)."""
    keys = torch.empty(w.numel(), dtype=torch.float64, device=w.device).exponential_(generator=generator)
    keys.div_(w)  # zero weights: +inf
    keys[taken] = float("inf")
    return torch.sort(torch.topk(keys, need, largest=False, sorted=False).indices).values


def _all_positive_plus_uniform(w: torch.Tensor, k: int, generator) -> torch.Tensor:
    """Every positive-weight index plus uniformly chosen zero-weight ones, k in all, ascending."""
    positive = torch.nonzero(w > 0).reshape(-1)  # ascending
    ranks = uniform_indices(w.numel() - positive.numel(), k - positive.numel(), generator, w.device)
    # The r-th zero-weight index is r + (number of positive indices p with p - rank(p) <= r).
    zeros_before = positive - torch.arange(positive.numel(), device=w.device)
    zeros = ranks + torch.searchsorted(zeros_before, ranks, right=True)
    return torch.sort(torch.cat([positive, zeros])).values
