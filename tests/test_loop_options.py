"""Loop options that change speed, not maths: the unpadded encoder, length-grouped batches and torch.compile."""

import pytest
from accelerate import Accelerator

from spafit_exp.engine.loop import train
from spafit_exp.inputs.data import load_task_data
from spafit_exp.inputs.modeling import build_tokenizer
from spafit_exp.run.app import prepare as build_prepared
from spafit_exp.run.spec import resolve
from tests.conftest import TINY_RUN, compose

NO_DROPOUT = ["+model.arch.hidden_dropout_prob=0.0", "+model.arch.attention_probs_dropout_prob=0.0"]


def _run(*overrides, record=None):
    """A tiny run through the loop; returns its result, the prepared model and the data."""
    cfg = resolve(compose([*TINY_RUN, "task=sst2", "trainer.max_train_samples=96", "trainer.log_every=1", *overrides]))
    data = load_task_data(cfg, build_tokenizer(cfg.model))
    if record is not None:
        collate = data.collate
        data.collate = lambda rows: record.append([len(r["input_ids"]) for r in rows]) or collate(rows)
    prepared = build_prepared(cfg)
    return train(cfg, prepared, data, Accelerator()), prepared, data


def test_training_loop_matches_padded_loop():
    """Dropout off: the loop's losses and dev scores are the same with and without unpadding, and the model
    leaves the loop with its own attention implementation."""
    (unpadded, unpadded_prepared, _), (padded, padded_prepared, _) = (_run(*NO_DROPOUT, f"trainer.unpad={enabled}")
                                                                for enabled in (True, False))
    assert unpadded_prepared.model.config._attn_implementation == "sdpa"
    assert padded_prepared.model.config._attn_implementation == "sdpa"
    assert [s for s, _ in unpadded.losses] == [s for s, _ in padded.losses]
    assert [v for _, v in unpadded.losses] == pytest.approx([v for _, v in padded.losses], rel=1e-4)
    assert unpadded.best["dev"] == pytest.approx(padded.best["dev"])


def test_group_by_length_pads_less_and_sees_every_row_once():
    plain, grouped = [], []
    _run(record=plain)
    _, _, data = _run("trainer.group_by_length=true", record=grouped)
    train_batches = len(data.train) // 8
    plain, grouped = plain[:train_batches], grouped[:train_batches]  # the rest are the eval loaders' batches
    assert sorted(sum(grouped, [])) == sorted(len(r["input_ids"]) for r in data.train)

    def slots(batches):
        return sum(max(b) * len(b) for b in batches)

    assert slots(grouped) < slots(plain)


@pytest.mark.slow
def test_compiled_model_trains_like_eager():
    from torch._dynamo.utils import counters

    eager, _, _ = _run(*NO_DROPOUT)
    counters.clear()
    compiled, _, _ = _run(*NO_DROPOUT, "trainer.compile=true")
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really traced the model
    assert [v for _, v in compiled.losses] == pytest.approx([v for _, v in eager.losses], rel=1e-3)
