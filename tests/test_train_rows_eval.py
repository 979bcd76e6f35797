"""The training rows of the train/test gap (`trainer.eval_train_samples`) are scored once, after training, with the
best evaluation's tensors, not at every evaluation (issue 32: evaluation was a quarter of a CPU-scale run). The
model leaves the loop as it trained, and training draws the same random numbers as when the rows were scored at
every evaluation. Dev scores are scripted so that the best evaluation is not the last."""

import pytest
import torch

from spafit_exp.engine import loop
from spafit_exp.run.app import run
from tests.conftest import TINY_RUN, compose

TRAIN_ROWS = 24  # != the 32 dev rows: tells the two evaluations apart
RECIPE = [*TINY_RUN, "trainer.max_train_samples=40", "trainer.log_every=1", "trainer.epochs=3",
          "trainer.checkpoint_every=0"]


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def spy(monkeypatch):
    """Every evaluation: which rows ("dev" or "train"), the trainable tensors then, the scores; dev's main metric
    replaced by `scores[n]`. `final`: the tensors when the loop is done (it asks for the optimizer's size last)."""
    real, seen = loop.evaluate, {"calls": [], "scores": [], "model": None, "final": None}

    def evaluate(model, loaders, task, accelerator):
        result = real(model, loaders, task, accelerator)
        if loaders:
            rows = len(next(iter(loaders.values())).dataset)
            kind = "train" if rows == TRAIN_ROWS else "dev"
            if kind == "dev":
                result["accuracy"] = seen["scores"][sum(c[0] == "dev" for c in seen["calls"])]
            seen["calls"].append((kind, trainable(model), dict(result)))
            seen["model"] = model
        return result

    real_size = loop.optimizer_state_bytes

    def optimizer_state_bytes(optimizer):
        seen["final"] = trainable(seen["model"])
        return real_size(optimizer)

    monkeypatch.setattr(loop, "evaluate", evaluate)
    monkeypatch.setattr(loop, "optimizer_state_bytes", optimizer_state_bytes)
    return seen


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


SUBSET = ["method=subset", "selector=magnitude", "selector.k=300", "decoder.pretune=false"]  # sparse export


@pytest.mark.parametrize("method", [["method=full_ft"], SUBSET], ids=["full_ft", "subset"])
def test_training_rows_are_scored_once_with_the_best_tensors(tmp_path, spy, method):
    spy["scores"] += [0.5, 0.9, 0.6]  # epoch 2 is the best
    record = run(compose([*RECIPE, *method, f"run.root={tmp_path}", f"trainer.eval_train_samples={TRAIN_ROWS}"]))
    kinds = [kind for kind, _, _ in spy["calls"]]
    assert kinds == ["dev", "dev", "dev", "train"]  # once, after training (it was after every evaluation)
    dev_states = [state for kind, state, _ in spy["calls"] if kind == "dev"]
    _, scored, scores = spy["calls"][-1]
    assert same(scored, dev_states[1]) and not same(scored, dev_states[2])  # the best epoch's tensors
    assert same(spy["final"], dev_states[2])  # swapped back: the model leaves as it trained
    best = record["metrics"]["best"]
    assert best["epoch"] == 2 and best["train"] == scores
    assert all("train" not in row for row in record["metrics"]["epochs"])


def test_no_training_rows_no_train_scores(tmp_path, spy):
    spy["scores"] += [0.5, 0.9, 0.6]
    record = run(compose([*RECIPE, f"run.root={tmp_path}", "trainer.eval_train_samples=0"]))
    assert [kind for kind, _, _ in spy["calls"]] == ["dev"] * 3
    assert record["metrics"]["best"]["train"] == {}


def test_training_draws_what_it_drew_when_the_rows_were_scored_at_every_evaluation(tmp_path, monkeypatch):
    """Iterating an evaluation loader takes one draw from the global generator (its base seed): a run that scores
    the training rows at the end must train like one whose every evaluation iterated one loader more."""
    scored = run(compose([*RECIPE, f"run.root={tmp_path / 'a'}", f"trainer.eval_train_samples={TRAIN_ROWS}"]))
    real = loop.evaluate

    def one_loader_more(model, loaders, task, accelerator):
        result = real(model, loaders, task, accelerator)
        if "dev" in loaders:  # rte has no test split: this is each evaluation's last loader
            torch.empty((), dtype=torch.int64).random_()
        return result

    monkeypatch.setattr(loop, "evaluate", one_loader_more)
    drawn = run(compose([*RECIPE, f"run.root={tmp_path / 'b'}", "trainer.eval_train_samples=0"]))
    assert scored["train"]["losses"] == drawn["train"]["losses"]
    assert [e["dev"] for e in scored["metrics"]["epochs"]] == [e["dev"] for e in drawn["metrics"]["epochs"]]
