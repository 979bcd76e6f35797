"""spafit_exp.ops.sampling: exact successive sampling, checked against brute-force inclusion probabilities on
every path (one round, re-summing rounds, several chunks with a padded tail, the exponential-race fallback);
edge cases, large n (> 2^24), seeding, top-k and uniform selection."""

import itertools

import numpy as np
import pytest
import torch

from spafit_exp.ops import successive
from spafit_exp.ops.sampling import topk_indices, uniform_indices
from spafit_exp.ops.successive import sample_without_replacement


def exact_inclusion(w, k: int) -> np.ndarray:
    """P(i in sample) for successive sampling, by enumerating every ordered sequence of k draws."""
    w = np.asarray(w, dtype=np.float64)
    inclusion = np.zeros(len(w))
    for seq in itertools.permutations(range(len(w)), k):
        p, left = 1.0, w.sum()
        for i in seq:
            p *= w[i] / left
            left -= w[i]
        inclusion[list(seq)] += p
    return inclusion


def check_distribution(w, k: int, trials: int, dtype=torch.float32, seed: int = 0, z: float = 4.5) -> None:
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor(w, dtype=dtype)
    draws = [sample_without_replacement(weights, k, g) for _ in range(trials)]
    for idx in draws[:50]:
        assert_valid(idx, len(w), k)
    freq = torch.bincount(torch.cat(draws), minlength=len(w)).double().numpy() / trials
    p = exact_inclusion(w, k)
    se = np.sqrt(p * (1 - p) / trials) + 1e-9
    assert np.all(np.abs(freq - p) <= z * se + 1e-12), f"\nexact     {p.round(4)}\nempirical {freq.round(4)}"


def assert_valid(idx: torch.Tensor, n: int, k: int) -> None:
    assert idx.dtype == torch.long and idx.shape == (k,)
    assert bool((idx[1:] > idx[:-1]).all()), "indices must be ascending and distinct"
    if k:
        assert 0 <= int(idx[0]) and int(idx[-1]) < n


@pytest.fixture
def count_removals(monkeypatch):
    """Counts re-summing rounds (chunks.remove calls), to make sure a test exercises that path."""
    calls = []
    original = successive._Chunks.remove

    def remove(self, elements):
        calls.append(elements.numel())
        return original(self, elements)

    monkeypatch.setattr(successive._Chunks, "remove", remove)
    return calls


# --- exactness ---------------------------------------------------------------------------------------------


def test_inclusion_probabilities_match_successive_sampling():
    check_distribution([1.0, 2.0, 3.0, 4.0, 10.0, 0.5], k=3, trials=4000)


def test_inclusion_probabilities_resumming_rounds_and_chunks(monkeypatch, count_removals):
    """Dominant weights make the first round mostly repeats; chunks of 2 over 7 elements (one padded)."""
    monkeypatch.setattr(successive, "_chunk_size", lambda n, k: 2)
    check_distribution([500.0, 1.0, 300.0, 2.0, 1.0, 0.5, 4.0], k=4, trials=2500, dtype=torch.float64)
    assert len(count_removals) > 1000  # most calls needed more than one round


def test_inclusion_probabilities_exponential_race_fallback(monkeypatch):
    monkeypatch.setattr(successive, "MAX_ROUNDS", 1)  # one round of draws, then the race for the rest
    check_distribution([1000.0, 1000.0, 1.0, 2.0, 3.0, 1.0], k=4, trials=1500, dtype=torch.float64, seed=1)
    monkeypatch.setattr(successive, "MAX_ROUNDS", 0)  # the race alone
    check_distribution([1.0, 2.0, 3.0, 4.0, 10.0, 0.5], k=3, trials=1500, seed=2)


@pytest.fixture
def count_splits(monkeypatch):
    """Counts heavy / light split races, to make sure a test exercises that path."""
    calls = []
    original = successive._split_race

    def split_race(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(successive, "_split_race", split_race)
    return calls


SKEWED = [500.0, 1.0, 300.0, 2.0, 1.0, 0.5, 4.0, 0.2, 3.0]


@pytest.mark.parametrize("weights,threshold,k", [(SKEWED, 4.0, 3), (SKEWED, 300.0, 2), (SKEWED, 0.9, 4),
                                                 ([5.0, 5.0, 4.0, 4.0, 4.0, 4.0, 3.0], 5.0, 2)])
def test_inclusion_probabilities_heavy_light_split(monkeypatch, count_splits, weights, threshold, k):
    """Heavy elements race with explicit keys, light ones arrive as Poisson draws below the heavy bound; chunks
    of 2 (one padded, heavy and light elements sharing chunks). The last case: light elements nearly as heavy as
    the heavy ones, so a light element often arrives several times before the bound."""
    monkeypatch.setattr(successive, "_chunk_size", lambda n, k: 2)
    monkeypatch.setattr(successive, "_heavy_threshold", lambda w, k: torch.tensor(threshold, dtype=w.dtype))
    monkeypatch.setattr(successive, "HEAVY_MAX_DRAWS", 1e9)
    check_distribution(weights, k=k, trials=3000, dtype=torch.float64)
    assert len(count_splits) == 3000


def test_split_runs_on_heavy_tails_and_rounds_on_flat_weights(monkeypatch, count_splits):
    """The path depends on the weights alone: a real step's kind of I^2 (log-normal, a few elements hold most of
    the mass) takes the split, and both paths include its heaviest elements equally often; flat weights, whose
    light part would need ~n draws, take the rounds."""
    g = torch.Generator().manual_seed(0)
    n, k, trials = 1 << 21, 2_000, 20
    heavy_tailed = torch.randn(n, generator=g).mul_(4).exp_()
    top = torch.topk(heavy_tailed, 1_000).indices
    split = [sample_without_replacement(heavy_tailed, k, g) for _ in range(trials)]
    assert len(count_splits) == trials
    assert_valid(split[0], n, k)
    monkeypatch.setattr(successive, "HEAVY_MIN_N", 1 << 62)
    rounds = [sample_without_replacement(heavy_tailed, k, g) for _ in range(trials)]
    assert len(count_splits) == trials
    rate = [sum(int(torch.isin(top, idx).sum()) for idx in draws) / (trials * top.numel()) for draws in (split, rounds)]
    assert 0.3 < rate[0] < 0.97 and abs(rate[0] - rate[1]) < 0.02, rate
    monkeypatch.setattr(successive, "HEAVY_MIN_N", 1 << 20)
    assert_valid(sample_without_replacement(torch.rand(n, generator=g) + 0.5, k, g), n, k)
    assert len(count_splits) == trials


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_split_decision_and_padded_tail_in_every_dtype(count_splits, dtype):
    """At n >= 2^20 with a padded last chunk: heavy-tailed weights take the split in every dtype, flat ones the
    rounds."""
    g = torch.Generator().manual_seed(1)
    n, k = (1 << 21) + 12_345, 2_000
    heavy = torch.randn(n, generator=g).mul_(4).exp_()
    heavy = heavy.div_(heavy.max()).mul_(6e4).to(dtype)  # within float16's range (the lightest become 0)
    heavy[-5:] = 6e4  # heavy elements in the padded tail chunk
    chunks = successive._Chunks(heavy, successive._chunk_size(n, k))
    found, weights = successive._heavy_set(k, chunks, successive._heavy_threshold(heavy, k))
    assert bool(torch.isin(torch.arange(n - 5, n), found).all()) and torch.equal(weights, heavy[found].double())
    idx = sample_without_replacement(heavy, k, g)
    assert_valid(idx, n, k)
    assert len(count_splits) == 1 and bool((heavy[idx] > 0).all())
    assert_valid(sample_without_replacement((torch.rand(n, generator=g) + 0.5).to(dtype), k, g), n, k)
    assert len(count_splits) == 1


def test_large_n_proportions():
    """n > 2^24 (beyond torch.multinomial): a group with 3x the weight gets ~3/4 of a small sample."""
    n, k = (1 << 24) + 12_345, 20_000
    weights = torch.ones(n)
    weights[1::2] = 3.0
    idx = sample_without_replacement(weights, k, torch.Generator().manual_seed(0))
    assert_valid(idx, n, k)
    heavy = float((idx % 2 == 1).double().mean())
    # Without replacement from a huge population this is ~binomial(k, 3/4) (the sample is 0.1% of n).
    assert abs(heavy - 0.75) < 4 * np.sqrt(0.75 * 0.25 / k)


# --- contract and edge cases -------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k", [(1, 1), (6, 3), (100, 1), (1000, 999), (4099, 500), (70_001, 700)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_k_distinct_ascending(n, k, dtype):
    g = torch.Generator().manual_seed(n + k)
    weights = torch.rand(n, generator=g).square().to(dtype) + 1e-3
    assert_valid(sample_without_replacement(weights, k, g), n, k)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_weights_sample_like_their_float32_values(monkeypatch, dtype):
    """Half weights are summed in float32 slice by slice (a padded tail included): same draws as float32."""
    monkeypatch.setattr(successive, "_HALF_SLICE", 64 * 100)
    weights = torch.rand(100_003, generator=torch.Generator().manual_seed(0)).square().to(dtype)
    a = sample_without_replacement(weights, 700, torch.Generator().manual_seed(1))
    b = sample_without_replacement(weights.float(), 700, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_zero_weights_never_chosen_when_enough_positive():
    g = torch.Generator().manual_seed(0)
    weights = torch.zeros(200_000)
    weights[5000:6000] = torch.rand(1000, generator=g) + 0.01  # few positive chunks: the count is checked
    weights[150_000:150_010] = 1e-30  # tiny but positive
    for k in (1, 100, 1000, 1010):
        idx = sample_without_replacement(weights, k, g)
        assert_valid(idx, weights.numel(), k)
        assert bool((weights[idx] > 0).all())
    scattered = torch.rand(300_000, generator=g)
    scattered[torch.rand(300_000, generator=g) < 0.5] = 0.0
    idx = sample_without_replacement(scattered, 3000, g)
    assert bool((scattered[idx] > 0).all())


def test_fewer_positive_than_k_takes_all_positive_then_uniform_zeros():
    weights = torch.zeros(1000)
    positive = torch.tensor([3, 500, 999])
    weights[positive] = torch.tensor([1.0, 5.0, 0.1])
    idx = sample_without_replacement(weights, 10, torch.Generator().manual_seed(0))
    assert_valid(idx, 1000, 10)
    assert set(positive.tolist()) <= set(idx.tolist())
    assert torch.equal(sample_without_replacement(weights, 3), positive)


def test_all_zero_weights_sample_uniformly():
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(20)
    for _ in range(500):
        idx = sample_without_replacement(torch.zeros(20), 5, g)
        assert_valid(idx, 20, 5)
        counts[idx] += 1
    assert float(counts.min()) > 0.25 * 500 * 0.5  # each index ~125 times


def test_k_zero_and_k_equal_n():
    weights = torch.rand(50)
    assert sample_without_replacement(weights, 0).numel() == 0
    assert torch.equal(sample_without_replacement(weights, 50), torch.arange(50))


def test_non_contiguous_and_nd_weights_index_the_flattened_tensor():
    base = torch.zeros(300, 400)
    base[:, :7] = 1.0  # after .t(): the first 7 rows
    weights = base.t()
    idx = sample_without_replacement(weights, 500, torch.Generator().manual_seed(0))
    assert_valid(idx, weights.numel(), 500)
    assert bool((weights.reshape(-1)[idx] > 0).all())


def test_generator_seeding_is_reproducible_and_threads_are_restored():
    weights = torch.rand(100_003).square()
    threads = torch.get_num_threads()
    a = sample_without_replacement(weights, 1000, torch.Generator().manual_seed(7))
    b = sample_without_replacement(weights, 1000, torch.Generator().manual_seed(7))
    c = sample_without_replacement(weights, 1000, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_invalid_weights_raise(bad):
    weights = torch.rand(100)
    weights[10] = bad
    with pytest.raises(ValueError):
        sample_without_replacement(weights, 5)
    with pytest.raises(ValueError):
        sample_without_replacement(-torch.rand(100), 5)
    with pytest.raises(ValueError):
        sample_without_replacement(torch.rand(10), 11)
    with pytest.raises(TypeError):
        sample_without_replacement(torch.ones(10, dtype=torch.long), 2)


# --- top-k and uniform -------------------------------------------------------------------------------------


def test_topk_picks_the_largest():
    scores = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    idx = topk_indices(scores.view(100, 100), 50)
    assert_valid(idx, scores.numel(), 50)
    assert torch.equal(idx, torch.argsort(scores, descending=True)[:50].sort().values)


def test_uniform_indices():
    g = torch.Generator().manual_seed(0)
    for n, k in [(10, 0), (10, 10), (10, 3), (1000, 300), (10**9, 5000)]:  # 10^9: O(k) memory, no permutation
        assert_valid(uniform_indices(n, k, g), n, k)
    counts = torch.bincount(torch.cat([uniform_indices(12, 2, g) for _ in range(3000)]), minlength=12)
    se = np.sqrt(3000 * (1 / 6) * (5 / 6))
    assert float((counts - 500).abs().max()) < 4.5 * se
    with pytest.raises(ValueError):
        uniform_indices(5, 6)


@pytest.mark.parametrize("kind", ["gaussian", "heavy_tail", "blocks", "ties_at_zero"])
def test_thresholded_topk_equals_full_topk(kind):
    """Top Tuning's top-k over millions of candidates goes through a sampled threshold: the selection must be
    exactly torch.topk's, whatever the score distribution (including a sample that misses the tail)."""
    g = torch.Generator().manual_seed(0)
    n, k = 3_000_000, 2_000
    if kind == "gaussian":
        scores = torch.randn(n, generator=g).square()
    elif kind == "heavy_tail":
        scores = torch.randn(n, generator=g).mul(4).exp()  # log-normal: a few huge values
    elif kind == "blocks":  # the top k all inside one tensor's block, far from most strided samples
        scores = torch.rand(n, generator=g)
        scores[1_000_003:1_003_003] += 10
    else:  # most scores zero (no gradient): fewer positive than k
        scores = torch.zeros(n)
        scores[torch.randperm(n, generator=g)[:500]] = 1.0
    expected = torch.topk(scores, k, sorted=False)
    got = topk_indices(scores, k)
    assert got.numel() == k and torch.equal(got, torch.sort(got).values)
    assert torch.equal(torch.sort(scores[got]).values, torch.sort(expected.values).values)
    if kind != "ties_at_zero":  # with ties the set of values is what is defined
        assert torch.equal(got, torch.sort(expected.indices).values)
