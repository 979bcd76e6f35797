"""Fixed subsets compute a Linear weight's gradient only at the selected entries (spafit_exp/ops/sparse_grad.py): the
same values as the dense gradient there, and the same training trajectory as the dense path masked."""

import pytest
import torch
from omegaconf import OmegaConf

from spafit_exp.methods import Selection
from spafit_exp.methods.subset import SubsetOptions, subset
from spafit_exp.ops import sparse_grad
from spafit_exp.ops.masking import FlatParams, candidate_params
from spafit_exp.ops.params import count_params, freeze_all
from tests.helpers import tiny_model


def _outside(n: int, index: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[index] = False
    return mask


def test_selected_linear_gradient_equals_dense_at_the_selection():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 24, requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(40, 24))
    bias = torch.nn.Parameter(torch.randn(40))
    index = torch.sort(torch.randperm(weight.numel())[:25]).values
    upstream = torch.randn(3, 7, 40)

    torch.nn.functional.linear(x, weight, bias).backward(upstream)
    dense_w, dense_x, dense_b = weight.grad.clone(), x.grad.clone(), bias.grad.clone()
    weight.grad = x.grad = bias.grad = None
    weight.requires_grad_(False)
    values = torch.nn.Parameter(weight.detach().view(-1)[index].clone())
    sparse_grad.SelectedLinear.apply(x, weight, bias, values, index).backward(upstream)

    assert weight.grad is None  # no dense buffer
    assert torch.allclose(values.grad, dense_w.view(-1)[index], rtol=1e-5, atol=1e-6)
    assert torch.allclose(x.grad, dense_x, rtol=1e-5, atol=1e-6)
    assert torch.allclose(bias.grad, dense_b, rtol=1e-5, atol=1e-6)


def test_selected_embedding_gradient_equals_dense_at_the_selection():
    torch.manual_seed(0)
    layer = torch.nn.Embedding(30, 8, padding_idx=0)
    ids = torch.tensor([[0, 3, 3, 5, 0], [7, 3, 9, 0, 0]])  # padding, repeated rows, rows absent from the batch
    upstream = torch.randn(2, 5, 8)
    layer(ids).backward(upstream)
    dense = layer.weight.grad.view(-1).clone()
    rows = torch.tensor([0, 0, 3, 3, 4, 5, 9, 29])  # the padding row and two absent rows are selected too
    index = rows * 8 + torch.tensor([1, 6, 0, 7, 2, 5, 3, 4])
    layer.weight.requires_grad_(False)
    values = torch.nn.Parameter(layer.weight.detach().view(-1)[index].clone())
    out = sparse_grad.SelectedEmbedding.apply(ids, layer.weight, values, index, layer.padding_idx)
    out.backward(upstream)
    assert torch.equal(out, layer(ids))
    assert torch.allclose(values.grad, dense[index], rtol=1e-6, atol=1e-7)
    assert dense[index].count_nonzero() == 4  # rows 3 (twice), 5, 9: padding and absent rows get nothing


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
    flat = FlatParams(candidate_params(model, "encoder"))
    g = torch.Generator().manual_seed(3)
    picks = []  # a few entries of every tensor: Linear weights take the sampled path, the rest are masked
    for start, p in zip(flat.offsets[:-1], flat.params):
        picks.append(start + torch.randperm(p.numel(), generator=g)[:max(1, p.numel() // 64)])
    index = torch.sort(torch.cat(picks)).values
    options = SubsetOptions(name="subset", tag="subset", lr=1e-2, candidates="encoder", weight_grad=weight_grad)
    prepared = subset(model, options, Selection(index, index.numel(), flat.n))
    trainer = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.0, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8})
    optimizer = prepared.make_optimizer(trainer)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    batches = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(3, 100, (4, 12), generator=batches)
        ids[:, -2:] = 0  # padding tokens: the padding row takes no gradient on either path
        labels = torch.randint(0, 2, (4,), generator=batches)
        with torch.random.fork_rng():  # the same dropout draws in both runs
            torch.manual_seed(7)
            model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 0.05)  # small: clipping is active, its norm must agree
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    info = prepared.info
    return ({n: p.detach().clone() for n, p in model.named_parameters()},
            (info.get("sampled_linears", 0), info.get("sampled_embeddings", 0)))


def test_sampled_path_follows_the_dense_trajectory():
    sampled, (linears, embeddings) = _trained("sampled")
    dense, _ = _trained("dense")
    assert linears == 4 * 6 + 1  # q, k, v, attention output, intermediate, output per layer; the pooler
    assert embeddings == 3  # word, position, token type
    assert set(dense) < set(sampled)  # + the selected values of those layers
    for name in dense:
        assert torch.allclose(sampled[name], dense[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("fraction, expected", [(1 / 64, True), (1 / 4, False)])
def test_dense_gemm_above_the_break_even(fraction, expected):
    weight = torch.nn.Parameter(torch.zeros(64, 64))
    assert sparse_grad.worth_it(weight, int(weight.numel() * fraction)) is expected


def test_selected_values_do_not_count_twice_in_the_model_total():
    model = tiny_model()
    freeze_all(model)
    _, total = count_params(model)
    weight = model.bert.embeddings.word_embeddings.weight
    installed = sparse_grad.install(model, {weight: torch.tensor([3, 40, 41])})
    assert installed.embeddings == 1
    assert count_params(model) == (3, total)  # the 3 values train; the total is still the model's
