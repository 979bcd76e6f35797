"""Fixed subsets compute a Linear weight's gradient only at the selected entries (spafit_exp/sparse_grad.py): the
same values as the dense gradient there, and the same training trajectory as the dense path masked."""

import pytest
import torch
from omegaconf import OmegaConf

from spafit_exp import sparse_grad
from spafit_exp.masking import FlatParams, candidate_params
from spafit_exp.methods import Selection
from spafit_exp.methods.subset import SubsetOptions, subset
from tests.helpers import tiny_model


def test_sampled_weight_grad_equals_dense_at_the_selection():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 24, requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(40, 24))
    bias = torch.nn.Parameter(torch.randn(40))
    index = torch.sort(torch.randperm(weight.numel())[:25]).values
    upstream = torch.randn(3, 7, 40)

    torch.nn.functional.linear(x, weight, bias).backward(upstream)
    dense_w, dense_x, dense_b = weight.grad.clone(), x.grad.clone(), bias.grad.clone()
    weight.grad = x.grad = bias.grad = None
    sparse_grad.SelectedWeightGrad.apply(x, weight, bias, index).backward(upstream)

    assert torch.allclose(weight.grad.view(-1)[index], dense_w.view(-1)[index], rtol=1e-5, atol=1e-6)
    outside = torch.ones(weight.numel(), dtype=torch.bool)
    outside[index] = False
    assert not weight.grad.view(-1)[outside].any()
    assert torch.allclose(x.grad, dense_x, rtol=1e-5, atol=1e-6)
    assert torch.allclose(bias.grad, dense_b, rtol=1e-5, atol=1e-6)


def test_token_chunks_do_not_change_the_values(monkeypatch):
    torch.manual_seed(1)
    d, x = torch.randn(50, 8), torch.randn(50, 6)
    rows, cols = torch.randint(0, 8, (9,)), torch.randint(0, 6, (9,))
    whole = sparse_grad.sampled_weight_grad(d, x, rows, cols)
    monkeypatch.setattr(sparse_grad, "CHUNK_ELEMENTS", 20)  # 2 tokens per chunk
    assert torch.allclose(sparse_grad.sampled_weight_grad(d, x, rows, cols), whole, rtol=1e-5, atol=1e-6)
    assert torch.allclose(whole, (d[:, rows] * x[:, cols]).sum(0), rtol=1e-5, atol=1e-6)


def _trained(weight_grad: str, steps: int = 4) -> tuple[dict, int]:
    model = tiny_model()
    flat = FlatParams(candidate_params(model, "no_embeddings"))
    g = torch.Generator().manual_seed(3)
    picks = []  # a few entries of every tensor: Linear weights take the sampled path, the rest are masked
    for start, p in zip(flat.offsets[:-1], flat.params):
        picks.append(start + torch.randperm(p.numel(), generator=g)[:max(1, p.numel() // 64)])
    index = torch.sort(torch.cat(picks)).values
    options = SubsetOptions(name="subset", tag="subset", lr=1e-2, candidates="no_embeddings", weight_grad=weight_grad)
    prepared = subset(model, options, Selection(index, index.numel(), flat.n))
    trainer = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.0, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8})
    optimizer = prepared.make_optimizer(prepared.model, trainer)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    batches = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(3, 100, (4, 12), generator=batches)
        labels = torch.randint(0, 2, (4,), generator=batches)
        with torch.random.fork_rng():  # the same dropout draws in both runs
            torch.manual_seed(7)
            model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 0.05)  # small: clipping is active, its norm must agree
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {n: p.detach().clone() for n, p in model.named_parameters()}, prepared.info.get("sampled_linears", 0)


def test_sampled_path_follows_the_dense_trajectory():
    sampled, linears = _trained("sampled")
    dense, _ = _trained("dense")
    assert linears == 4 * 6 + 1  # q, k, v, attention output, intermediate, output per layer; the pooler
    for name in dense:
        assert torch.allclose(sampled[name], dense[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("fraction, expected", [(1 / 64, True), (1 / 4, False)])
def test_dense_gemm_above_the_break_even(fraction, expected):
    weight = torch.nn.Parameter(torch.zeros(64, 64))
    assert sparse_grad.worth_it(weight, int(weight.numel() * fraction)) is expected
