"""trainer.eval_every (evaluations every N optimizer steps, the best one kept) and trainer.early_stopping_patience
(issue 31 item 10). The dev scores are scripted (the real evaluation runs, its main metric is replaced), so which
evaluation is best, and when patience runs out, is known in advance."""

import math

import pytest
import torch
from safetensors.torch import load_file

from spafit_exp.core.errors import ConfigError
from spafit_exp.engine import loop
from spafit_exp.engine.artefacts import TRAINABLE_FILE
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from spafit_exp.run.spec import resolve
from spafit_exp.run.validation import validate
from tests.conftest import TINY_RUN, compose, run_cli

# 40 rows in batches of 8: 5 optimizer steps an epoch
RECIPE = [*TINY_RUN, "trainer.max_train_samples=40", "trainer.eval_train_samples=0", "trainer.log_every=1"]


@pytest.fixture
def scripted(monkeypatch):
    """Replaces the dev main metric (rte: accuracy) of the n-th evaluation by `scores[n]` and keeps the trainable
    tensors the model had at each evaluation."""
    real, states, scores = loop.evaluate, [], []

    def evaluate(model, loaders, task, accelerator):
        result = real(model, loaders, task, accelerator)
        if "dev" in loaders:  # the dev splits (no train-rows evaluation in RECIPE; rte reports no test split)
            states.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
            result["accuracy"] = scores[len(states) - 1]
        return result

    monkeypatch.setattr(loop, "evaluate", evaluate)
    return scores, states


def test_eval_every_evaluates_every_n_steps_and_keeps_the_best_evaluation(tmp_path, scripted):
    scores, states = scripted
    scores += [0.5, 0.9, 0.6, 0.7]  # the second evaluation is the best, not the last
    cfg = compose([*RECIPE, f"run.root={tmp_path}", "trainer.epochs=2", "trainer.eval_every=3"])
    record = run(cfg)
    steps = record["train"]["steps"]
    assert steps == 10
    evaluations = record["metrics"]["epochs"]
    assert len(evaluations) == math.ceil(steps / 3) == 4  # steps 3, 6, 9 and the end
    assert [e["step"] for e in evaluations] == [3, 6, 9, 10]
    assert [e["epoch"] for e in evaluations] == [0.6, 1.2, 1.8, 2]  # training progress in epochs
    best = record["metrics"]["best"]
    assert (best["step"], best["epoch"], best["dev"]["accuracy"]) == (6, 1.2, 0.9)
    assert record["train"]["early_stopped"] is False
    saved = load_file(run_dir(cfg) / TRAINABLE_FILE)
    assert saved.keys() == states[1].keys()
    assert all(torch.equal(saved[n], states[1][n]) for n in saved)  # the best evaluation's tensors
    assert not all(torch.equal(saved[n], states[-1][n]) for n in saved)  # not the last's


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path, scripted):
    scores, _ = scripted
    scores += [0.9] + [0.5] * 10  # nothing betters the first evaluation
    record = run(compose([*RECIPE, f"run.root={tmp_path}", "trainer.epochs=3", "trainer.eval_every=2",
                          "trainer.early_stopping_patience=2"]))
    assert [e["step"] for e in record["metrics"]["epochs"]] == [2, 4, 6]
    assert record["train"]["steps"] == 6 and record["train"]["early_stopped"] is True  # of 15 planned steps
    assert record["status"] == "completed" and record["metrics"]["best"]["step"] == 2


def test_early_stopping_with_per_epoch_evaluations(tmp_path, scripted):
    scores, _ = scripted
    scores += [0.6, 0.8, 0.8, 0.7, 0.9]  # a tie is no improvement
    record = run(compose([*RECIPE, f"run.root={tmp_path}", "trainer.epochs=5", "trainer.early_stopping_patience=2"]))
    assert [e["epoch"] for e in record["metrics"]["epochs"]] == [1, 2, 3, 4]
    assert record["train"]["steps"] == 20 and record["train"]["early_stopped"] is True
    assert record["metrics"]["best"]["epoch"] == 2


def test_both_keys_are_in_the_fingerprint_and_their_defaults_keep_older_fingerprints():
    from spafit_exp.core import fingerprint

    plain = fingerprint.of(compose(RECIPE))
    assert not any(k in plain["settings"] for k in ("trainer.eval_every", "trainer.early_stopping_patience"))
    for override in ("trainer.eval_every=3", "trainer.early_stopping_patience=2"):
        changed = fingerprint.of(compose([*RECIPE, override]))
        assert changed["hash"] != plain["hash"] and override.split("=")[0] in changed["settings"]


def test_decoder_pretuning_keeps_its_own_schedule():
    """The stage keeps its last state: the run's early stopping must not cut it short."""
    from spafit_exp.selection.decoder import decoder_spec

    spec = resolve(compose([*RECIPE, "trainer.eval_every=3", "trainer.early_stopping_patience=1"]))
    tuned = decoder_spec(spec, spec.decoder.recipe).trainer
    assert tuned.eval_every is None and tuned.early_stopping_patience is None


@pytest.mark.parametrize("override", ["trainer.eval_every=0", "trainer.eval_every=-4",
                                      "trainer.early_stopping_patience=0", "trainer.early_stopping_patience=-1"])
def test_non_positive_values_are_refused(override):
    with pytest.raises(ConfigError) as err:
        validate(compose([override]))
    assert str(err.value).startswith(override.split("=")[0] + "=") and "\n" not in str(err.value)


@pytest.mark.parametrize("override,needle", [("trainer.eval_every=often", "could not be converted to Integer"),
                                             ("trainer.early_stopping_patience=-2", "must be null or an integer >= 1")])
def test_bad_values_on_the_command_line_are_one_line_exit_2(tmp_path, override, needle):
    proc = run_cli([f"run.root={tmp_path}/out", *RECIPE, override], cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert override in lines[0] and needle in lines[0]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # nothing written
