"""The W&B run summary shows what the record and the tables use (issue 31 item 8): the best evaluation's scores —
not the last logged —, the reported split's, trainable parameters, samples/s and the run's peak memory. A real
offline run (WANDB_MODE=offline, no network), its final summary read once the tracker has finished it."""

import json

import pytest

from spafit_exp.engine import loop
from spafit_exp.engine.tracking import summary_values
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from tests.conftest import TINY_RUN, compose


def test_offline_run_summary_holds_the_best_epoch_and_the_run_costs(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from accelerate.tracking import WandBTracker

    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    real, scores = loop.evaluate, iter([0.9, 0.5])  # epoch 1 is the best, epoch 2 the last logged

    def evaluate(model, loaders, task, accelerator):
        result = real(model, loaders, task, accelerator)
        return result | {"accuracy": next(scores)} if "dev" in loaders else result

    summary, finish = {}, WandBTracker.finish

    def finished(tracker):
        finish(tracker)
        # the summary as the finished run holds it (what `wandb sync` uploads): an offline run writes no
        # wandb-summary.json, and wandb flushes the last logged row at finish, over what was set before
        final = tracker.run._final_summary
        summary.update({item.key: json.loads(item.value_json) for item in final.item if not item.nested_key})

    monkeypatch.setattr(loop, "evaluate", evaluate)
    monkeypatch.setattr(WandBTracker, "finish", finished)
    cfg = compose([*TINY_RUN, f"run.root={tmp_path / 'out'}", "trainer.epochs=2", "trainer.eval_train_samples=0",
                   "tracking=offline"])
    record = run(cfg)
    assert [e["dev"]["accuracy"] for e in record["metrics"]["epochs"]] == [0.9, 0.5]
    assert summary["dev/accuracy"] == 0.9 and summary["best/epoch"] == 1 and summary["best/step"] == 4
    assert summary["reported_split"] == "dev" and summary["reported/accuracy"] == 0.9  # rte reports dev
    assert summary["params/trainable"] == record["params"]["trainable"] > 0
    assert summary["perf/train_samples_per_s"] == record["timing"]["train_samples_per_s"] > 0
    assert summary["memory/peak_bytes"] == record["memory"]["peak_bytes"] > 0
    assert summary["status"] == "completed"
    # where an offline run's files go (docs: tracking): the run directory's wandb/offline-run-*
    assert len(list((run_dir(cfg) / "wandb").glob("offline-run-*"))) == 1


def test_the_reported_split_follows_the_task():
    """CoNLL-2003 and TREC-6 report their labelled test set: `reported/*` are the best epoch's test scores."""
    record = {"status": "completed", "params": {"trainable": 10, "total": 100, "fraction": 0.1},
              "metrics": {"reported_split": "test", "best": {"epoch": 2, "step": 8, "dev": {"f1": 0.8},
                                                              "test": {"f1": 0.7}}},
              "timing": {"train_samples_per_s": 12.5}, "memory": {"peak_bytes": 2**30, "peak_scope": "run"}}
    values = summary_values(record)
    assert values["reported/f1"] == 0.7 and values["dev/f1"] == 0.8 and values["test/f1"] == 0.7
    assert values["params/trainable"] == 10 and values["perf/train_samples_per_s"] == 12.5
    assert values["memory/peak_bytes"] == 2**30 and values["memory/peak_scope"] == "run"
