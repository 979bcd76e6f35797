"""The device-native sampler: exact successive sampling (checked against brute-force inclusion probabilities),
k distinct indices, zero weights never chosen, large n past torch.multinomial's 2^24 cap, seeded."""

import itertools

import numpy as np
import pytest
import torch

from spafit_exp.sampling import sample_without_replacement, topk_indices, uniform_indices


def inclusion_probabilities(weights: list[float], k: int) -> np.ndarray:
    """P(i among the k drawn) under successive sampling, by enumerating every ordered draw."""
    p = np.array(weights) / sum(weights)
    incl = np.zeros(len(p))
    for order in itertools.permutations(range(len(p)), k):
        prob, left = 1.0, 1.0
        for i in order:
            prob *= p[i] / left
            left -= p[i]
        incl[list(order)] += prob
    return incl


@pytest.mark.parametrize("weights,k", [
    ([5.0, 1.0, 0.0, 2.0, 0.5, 1.5], 3),
    ([100.0, 50.0, 1.0, 1.0, 1.0, 1.0, 1.0], 4),  # dominant weights: repeats pile up, rounds re-sum
])
def test_inclusion_frequencies_match_successive_sampling(weights, k):
    g = torch.Generator().manual_seed(0)
    w = torch.tensor(weights)
    trials = 6000
    counts = np.zeros(len(weights))
    for _ in range(trials):
        chosen = sample_without_replacement(w, k, g)
        assert chosen.unique().numel() == k
        counts[chosen.numpy()] += 1
    expected = inclusion_probabilities(weights, k)
    stderr = np.sqrt(expected * (1 - expected) / trials) + 1e-9
    assert np.all(np.abs(counts / trials - expected) <= 4 * stderr + 1e-3), (counts / trials, expected)


def test_first_draw_is_proportional_to_weight():
    g = torch.Generator().manual_seed(1)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    first = np.bincount([int(sample_without_replacement(w, 2, g)[0]) for _ in range(8000)], minlength=4) / 8000
    assert np.allclose(first, w.numpy() / 10, atol=0.02)


def test_zero_weights_never_chosen_and_k_edges():
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(1000)
    w[::10] = torch.rand(100) + 0.1
    chosen = sample_without_replacement(w, 60, g)
    assert chosen.unique().numel() == 60 and bool((w[chosen] > 0).all())
    everything = sample_without_replacement(w, 150, g)  # more than the 100 positive weights
    assert everything.unique().numel() == 150 and bool((w[everything[:100]] > 0).all())
    assert sample_without_replacement(w, 0, g).numel() == 0
    with pytest.raises(ValueError):
        sample_without_replacement(w, 1001, g)


def test_large_n_beyond_multinomial_cap():
    n = (1 << 24) + 12345
    w = torch.rand(n, generator=torch.Generator().manual_seed(0))
    w[-5:] = 1e6  # the tail chunk is reachable
    chosen = sample_without_replacement(w, 2000, torch.Generator().manual_seed(0))
    assert chosen.unique().numel() == 2000 and int(chosen.max()) < n
    assert set(range(n - 5, n)) <= set(chosen.tolist())


def test_seeded_reproducible_and_bf16_input():
    w = torch.rand(50_000)
    a = sample_without_replacement(w, 500, torch.Generator().manual_seed(7))
    b = sample_without_replacement(w, 500, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    c = sample_without_replacement(w.to(torch.bfloat16), 500, torch.Generator().manual_seed(7))
    assert c.unique().numel() == 500


def test_topk_and_uniform():
    scores = torch.tensor([0.1, 5.0, 0.3, 9.0, 2.0])
    assert set(topk_indices(scores, 2).tolist()) == {1, 3}
    g = torch.Generator().manual_seed(0)
    u = uniform_indices(10_000_000, 1000, g)
    assert u.unique().numel() == 1000 and int(u.max()) < 10_000_000
    assert sorted(uniform_indices(10, 10, g).tolist()) == list(range(10))
    counts = np.bincount(torch.cat([uniform_indices(20, 5, g) for _ in range(4000)]).numpy(), minlength=20)
    assert np.allclose(counts / 4000, 0.25, atol=0.04)
