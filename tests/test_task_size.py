"""A task's size for sweep estimates lives in its YAML (`size: {train_rows, tokens_per_row}`), not in a table of
task names in the sweep code (issue 30): adding a task stays one YAML, and its estimate follows that YAML. The key
is checked like any other and changes no run's fingerprint."""

import dataclasses
import re

import pytest
from omegaconf import OmegaConf

from spafit_exp import CONF_DIR
from spafit_exp.core import fingerprint
from spafit_exp.core.errors import ConfigError
from spafit_exp.run.validation import validate
from spafit_exp.sweep import estimates
from spafit_exp.sweep.plan import expand
from tests.conftest import compose

TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
BERT_BASE = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "vocab_size": 30522,
             "max_position_embeddings": 512, "type_vocab_size": 2}


@pytest.mark.parametrize("task", TASKS)
def test_every_task_yaml_says_its_size_and_the_plan_carries_it(task):
    size = compose([f"task={task}"]).task.size
    assert isinstance(size.train_rows, int) and size.train_rows >= 1 and size.tokens_per_row > 0
    job = expand([f"task={task}"]).jobs[0]
    assert (job.train_rows, job.tokens_per_row) == (size.train_rows, size.tokens_per_row)


def test_the_sweep_code_names_no_task():
    source = (CONF_DIR.parent / "spafit_exp" / "sweep" / "estimates.py").read_text()
    assert [t for t in TASKS if re.search(rf"[\"']{t}[\"']", source)] == []


def test_the_estimate_follows_the_yaml_size():
    job = expand(["task=rte", "trainer.max_train_samples=null"]).jobs[0]
    seconds = {rows: estimates.run_seconds(dataclasses.replace(job, train_rows=rows), BERT_BASE, {}, {})
               for rows in (100_000, 200_000)}
    (small, basis), (large, _) = seconds[100_000], seconds[200_000]
    assert basis == "assumed" and large == pytest.approx(2 * small)
    more_tokens = estimates.run_seconds(dataclasses.replace(job, train_rows=100_000, tokens_per_row=140),
                                        BERT_BASE, {}, {})[0]
    assert more_tokens == pytest.approx(2 * small)
    unsized = dataclasses.replace(job, train_rows=None, tokens_per_row=None)  # a task YAML with `size: null`
    assert estimates.run_seconds(unsized, BERT_BASE, {}, {})[0] > 0


@pytest.mark.parametrize("override, key", [
    ("task.size.train_rows=0", "task.size.train_rows=0"),
    ("task.size.tokens_per_row=-1", "task.size.tokens_per_row=-1"),
    ("task.size=5", "task.size=5"),
])
def test_a_bad_size_names_its_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: must be"):
        validate(compose([override]))


def test_the_size_changes_no_fingerprint():
    cfg = compose([])
    edited = compose(["task.size.train_rows=12345"])
    assert fingerprint.of(cfg)["hash"] == fingerprint.of(edited)["hash"]
    assert OmegaConf.select(cfg, "task.size.train_rows") != 12345
