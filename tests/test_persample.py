"""Batched per-example squared gradients (spafit_exp/ops/persample.py) against one forward/backward per example:
classification, regression, token tagging and MLM losses, BERT and RoBERTa, examples of different lengths in one
padded batch, tied tensors (MLM decoder = word embeddings), and chunk sizes."""

from types import SimpleNamespace

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    RobertaConfig,
    RobertaForMaskedLM,
)

from spafit_exp.inputs.data import PadCollator
from spafit_exp.ops.masking import FlatParams, candidate_params
from spafit_exp.ops.persample import length_chunks, single_examples, sq_grad_sum, sq_grad_sum_loop
from tests.helpers import ARCH, tiny_model

PAD = {"bert": 0, "roberta": 1}


def mlm_model(family: str):
    torch.manual_seed(1)
    if family == "bert":
        return BertForMaskedLM(BertConfig(**ARCH))
    return RobertaForMaskedLM(RobertaConfig(**ARCH, pad_token_id=1))


def make_rows(n: int, kind: str, seed: int = 0) -> list[dict]:
    """Rows of 3..24 tokens; labels by `kind`. MLM rows have 1..3 labelled tokens."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(3, 25, (1,), generator=g))
        ids = torch.randint(3, 100, (length,), generator=g).tolist()
        row = {"input_ids": ids, "attention_mask": [1] * length}
        if kind == "mlm":
            labels = [-100] * length
            for t in torch.randperm(length, generator=g)[: 1 + i % 3].tolist():
                labels[t] = int(torch.randint(3, 100, (1,), generator=g))
            row["labels"] = labels
        elif kind == "tokens":
            row["labels"] = [-100] + torch.randint(0, 3, (length - 2,), generator=g).tolist() + [-100]
        elif kind == "regression":
            row["labels"] = float(torch.rand(1, generator=g))
        else:
            row["labels"] = i % 2
        rows.append(row)
    return rows


def one_by_one(model, flat, rows, collate) -> torch.Tensor:
    """The reference: each example alone (no padding), one forward/backward each."""
    return sq_grad_sum_loop(model, flat, [collate([row]) for row in rows])


def assert_same(batched: torch.Tensor, reference: torch.Tensor) -> None:
    assert torch.isfinite(reference).all() and reference.abs().max() > 0
    error = (batched - reference).abs().max() / reference.abs().max()
    assert error <= 1e-4, float(error)
    torch.testing.assert_close(batched, reference, rtol=1e-4, atol=1e-6 * float(reference.abs().max()))


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("loss", ["classification", "mlm"])
def test_batched_equals_one_example_at_a_time(family, loss):
    classifier = tiny_model(family)
    flat = FlatParams(candidate_params(classifier))  # the classifier's candidates, looked up by name in `model`
    model = classifier if loss == "classification" else mlm_model(family)
    rows = make_rows(11, "mlm" if loss == "mlm" else "classification")
    collate = PadCollator(PAD[family])
    batches = [collate(part) for part in length_chunks(rows, 4)]
    assert any((b["attention_mask"] == 0).any() for b in batches)  # lengths differ inside a chunk
    assert_same(sq_grad_sum(model, flat, batches), one_by_one(model, flat, rows, collate))


@pytest.mark.parametrize("kind", ["regression", "tokens"])
def test_other_losses(kind):
    torch.manual_seed(0)
    if kind == "regression":
        model = BertForSequenceClassification(BertConfig(**ARCH, num_labels=1))
    else:
        model = BertForTokenClassification(BertConfig(**ARCH, num_labels=3))
    flat = FlatParams(candidate_params(model))
    rows = make_rows(7, kind)
    collate = PadCollator(0, regression=kind == "regression")
    assert_same(sq_grad_sum(model, flat, [collate(rows)]), one_by_one(model, flat, rows, collate))


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_padding_does_not_contribute(family):
    """A short example padded next to a long one has the gradient it has alone, whatever the padding holds."""
    model = tiny_model(family)
    flat = FlatParams(candidate_params(model))
    collate = PadCollator(PAD[family])
    short = {"input_ids": [5, 17, 42], "attention_mask": [1] * 3, "labels": 1}
    long = {"input_ids": list(range(10, 32)), "attention_mask": [1] * 22, "labels": 0}
    padded = collate([short, long])
    garbage = {**padded, "input_ids": padded["input_ids"].clone()}
    garbage["input_ids"][0, 3:] = torch.randint(3, 100, (19,))  # anything in the padding slots
    alone = sq_grad_sum_loop(model, flat, [collate([long])])
    short_alone = sq_grad_sum_loop(model, flat, [collate([short])])
    for batch in (padded, garbage):
        assert_same(sq_grad_sum(model, flat, [batch]) - alone, short_alone)


def test_chunk_size_does_not_change_the_statistic():
    model = mlm_model("bert")
    flat = FlatParams(candidate_params(tiny_model("bert")))
    rows = make_rows(9, "mlm", seed=5)
    collate = PadCollator(0)
    sums = [sq_grad_sum(model, flat, [collate(part) for part in length_chunks(rows, size)]) for size in (1, 3, 16)]
    for other in sums[1:]:
        torch.testing.assert_close(other, sums[0], rtol=1e-5, atol=1e-6 * float(sums[0].abs().max()))


def test_an_example_without_labelled_tokens_adds_nothing():
    """Its single-example MLM loss is 0/0 (NaN, with a zero gradient); batched, it contributes nothing either."""
    model = mlm_model("bert")
    flat = FlatParams(candidate_params(tiny_model("bert")))
    rows = make_rows(4, "mlm", seed=7)
    empty = {**rows[0], "labels": [-100] * len(rows[0]["input_ids"])}
    collate = PadCollator(0)
    with_empty = sq_grad_sum(model, flat, [collate([*rows, empty])])
    torch.testing.assert_close(with_empty, sq_grad_sum(model, flat, [collate(rows)]))
    assert not sq_grad_sum_loop(model, flat, [collate([empty])]).any()


def test_single_examples_strips_padding():
    rows = make_rows(3, "mlm", seed=2)
    batch = PadCollator(0)(rows)
    for row, one in zip(rows, single_examples(batch)):
        assert one["input_ids"].tolist() == [row["input_ids"]] and one["labels"].tolist() == [row["labels"]]


def test_model_is_left_as_it_was():
    model = tiny_model("bert")
    model.train()
    model.classifier.weight.requires_grad_(False)
    flat = FlatParams(candidate_params(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sq_grad_sum(model, flat, [PadCollator(0)(make_rows(3, "cls"))])
    assert model.training and not model.classifier.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if "classifier" not in n)
    assert all(torch.equal(p, before[n]) and p.grad is None for n, p in model.named_parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class Toy(torch.nn.Module):
    """Embedding -> Linear (twice if `twice`) -> first token's logits; `scale` a parameter no rule covers."""

    def __init__(self, twice: bool = False):
        super().__init__()
        self.emb, self.lin, self.twice = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), twice
        self.scale = torch.nn.Parameter(torch.ones(4))
        self.config = SimpleNamespace(problem_type="single_label_classification", num_labels=4)

    def get_output_embeddings(self):
        return None

    def forward(self, input_ids, attention_mask=None):
        h = self.lin(self.emb(input_ids))
        h = self.lin(h) if self.twice else h
        return SimpleNamespace(logits=(h * self.scale)[:, 0])


def test_what_it_cannot_do_exactly_is_refused():
    batch = {"input_ids": torch.tensor([[1, 2], [3, 4]]), "labels": torch.tensor([0, 1])}
    toy = Toy(twice=True)
    with pytest.raises(RuntimeError, match="runs twice"):
        sq_grad_sum(toy, FlatParams([(n, p) for n, p in toy.named_parameters() if n.startswith("lin")]), [batch])
    toy = Toy()
    with pytest.raises(ValueError, match="no rule for Toy.scale"):
        sq_grad_sum(toy, FlatParams(list(toy.named_parameters())), [batch])
    flat = FlatParams([(n, p) for n, p in toy.named_parameters() if n != "scale"])
    assert_same(sq_grad_sum(toy, flat, [batch]), sq_grad_sum_loop_toy(toy, flat, batch))


def sq_grad_sum_loop_toy(toy, flat, batch):
    """The loop on the toy (it has no `.loss`): per example, the cross-entropy gradient squared."""
    total = torch.zeros(flat.n)
    for i in range(2):
        toy.zero_grad()
        logits = toy(batch["input_ids"][i:i + 1]).logits
        torch.nn.functional.cross_entropy(logits, batch["labels"][i:i + 1]).backward()
        total += torch.cat([p.grad.reshape(-1) ** 2 for p in flat.params])
    return total
