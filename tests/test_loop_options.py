"""Loop options that change speed, not maths: length-grouped batches and torch.compile."""

import pytest
from accelerate import Accelerator

from spafit_exp.checkpoint import build_prepared
from spafit_exp.data import load_task_data
from spafit_exp.modeling import build_tokenizer
from spafit_exp.train import train
from tests.conftest import TINY_RUN, compose

NO_DROPOUT = ["+model.arch.hidden_dropout_prob=0.0", "+model.arch.attention_probs_dropout_prob=0.0"]


def _run(*overrides, record=None):
    cfg = compose([*TINY_RUN, "task=sst2", "trainer.max_train_samples=96", "trainer.log_every=1", *overrides])
    data = load_task_data(cfg, build_tokenizer(cfg.model))
    if record is not None:
        collate = data.collate
        data.collate = lambda rows: record.append([len(r["input_ids"]) for r in rows]) or collate(rows)
    return train(cfg, build_prepared(cfg), data, Accelerator()), data


def test_group_by_length_pads_less_and_sees_every_row_once():
    plain, grouped = [], []
    _run(record=plain)
    _, data = _run("trainer.group_by_length=true", record=grouped)
    train_batches = len(data.train) // 8
    plain, grouped = plain[:train_batches], grouped[:train_batches]  # the rest are the eval loaders' batches
    assert sorted(sum(grouped, [])) == sorted(len(r["input_ids"]) for r in data.train)

    def slots(batches):
        return sum(max(b) * len(b) for b in batches)

    assert slots(grouped) < slots(plain)


@pytest.mark.slow
def test_compiled_model_trains_like_eager():
    from torch._dynamo.utils import counters

    eager, _ = _run(*NO_DROPOUT)
    counters.clear()
    compiled, _ = _run(*NO_DROPOUT, "trainer.compile=true")
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really traced the model
    assert [v for _, v in compiled.losses] == pytest.approx([v for _, v in eager.losses], rel=1e-3)
