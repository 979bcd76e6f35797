"""Where a run's time goes: every completed record splits its wall time into set-up, training, evaluation, saving
(and the rest), the first run of a process counts the process's imports, a resumed run adds up its sessions, and
a sweep's summary totals the phases. Only relations between the measured times are asserted, never their size."""

import json
import time

import pytest

from spafit_exp.__main__ import _outcome, sweep_summary
from spafit_exp.core import results, timing
from spafit_exp.core.record import SkippedRecord
from spafit_exp.core.record_check import problem
from spafit_exp.engine.resume import read_resume
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from tests.conftest import TINY_RUN, compose, run_cli

PHASES = ("setup_s", "train_s", "eval_s", "save_s")
DAY = 86_400.0  # a pretended process start this long ago: no tiny run takes that long


def tiny(root, *extra):
    return compose([*TINY_RUN, f"run.root={root}", "trainer.epochs=2", *extra])


def assert_adds_up(t: dict) -> None:
    assert all(t[p] > 0 for p in PHASES), t
    assert t["other_s"] >= 0 and t["wall_s"] == pytest.approx(sum(t[p] for p in PHASES) + t["other_s"], abs=1e-6)


def test_first_run_of_a_process_counts_its_start_and_later_runs_their_own(tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "_unclaimed", time.time() - DAY)  # as if the process had imported a day ago
    first = run(tiny(tmp_path, "experiment_name=first"))["timing"]
    second = run(tiny(tmp_path, "experiment_name=second"))["timing"]
    assert first["setup_s"] >= DAY and first["wall_s"] >= first["setup_s"]  # imports are the first run's set-up
    assert second["setup_s"] < DAY  # measured from the second run's own start
    for t in (first, second):
        assert_adds_up(t)
    on_disk = results.read(tmp_path / "second/rte/full_ft/tiny_bert/lr=0.001/seed=1")
    assert on_disk["timing"] == json.loads(json.dumps(second))


def test_run_origin_is_claimed_once(monkeypatch):
    monkeypatch.setattr(timing, "_unclaimed", 100.0)
    assert timing.run_origin(200.0) == 100.0
    assert timing.run_origin(300.0) == 300.0


def test_resumed_run_adds_up_every_session(tmp_path):
    """A session killed outright leaves no wall time in a record, only its checkpoint: its phases still count."""
    from accelerate import Accelerator

    from spafit_exp.engine.loop import StopRequested, train
    from spafit_exp.inputs.data import load_task_data
    from spafit_exp.inputs.modeling import build_tokenizer
    from spafit_exp.run.app import prepare
    from spafit_exp.run.spec import resolve

    cfg = tiny(tmp_path, "trainer.checkpoint_every=2", "trainer.max_train_samples=48")
    directory = run_dir(cfg)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(StopRequested):
        spec = resolve(cfg)
        train(spec, prepare(spec), load_task_data(spec, build_tokenizer(spec.model)), Accelerator(),
              checkpoint_dir=directory, stop=stop, started=time.time() - DAY)
    saved = read_resume(directory)["result"]
    assert saved["setup_seconds"] >= DAY and saved["save_seconds"] > 0 and saved["train_seconds"] > 0
    done = run(cfg)["timing"]
    assert done["setup_s"] > saved["setup_seconds"] and done["save_s"] > saved["save_seconds"]
    assert done["train_s"] > saved["train_seconds"]
    assert_adds_up(done)


def test_record_check_reads_the_phases_as_numbers():
    assert problem({"timing": {"wall_s": 3.0, "train_s": 2.0}}) is None  # records of older versions
    assert problem({"timing": {"wall_s": 3.0, "setup_s": 1.0, "eval_s": 0.5, "save_s": 0.1, "other_s": 0.0}}) is None
    assert problem({"timing": {"eval_s": "1s"}}) == "timing.eval_s='1s': must be a number, not str"


FULL = {"wall_s": 100.0, "setup_s": 10.0, "train_s": 60.0, "eval_s": 20.0, "save_s": 5.0, "other_s": 5.0}


def test_phase_totals_sums_phases_and_shares_of_wall_time():
    old = {"wall_s": 8.0, "train_s": 7.0}  # no phases: left out
    half = {"wall_s": 20.0, "setup_s": 4.0, "train_s": 12.0, "eval_s": 3.0, "save_s": 1.0, "other_s": 0.0}
    assert timing.phase_totals([FULL, old, None, half]) == (
        "time: setup 14.0s (12%) · train 72.0s (60%) · eval 23.0s (19%) · save 6.0s (5%) · other 5.0s (4%) over 2 runs")
    assert timing.phase_totals([half]) == (
        "time: setup 4.0s (20%) · train 12.0s (60%) · eval 3.0s (15%) · save 1.0s (5%) over 1 run")  # no other
    assert timing.phase_totals([old, None]) == ""


def test_sweep_summary_ends_with_the_completed_jobs_phases():
    completed = _outcome({"main_metric": "accuracy", "metrics": {"best": {"dev": {"accuracy": 0.5}}}, "timing": FULL},
                         time.time())
    assert completed[0] == "completed" and completed[3] == FULL
    skipped = _outcome(SkippedRecord({"main_metric": "accuracy", "timing": FULL}), time.time())
    assert skipped[0] == "skipped" and skipped[3] is None  # its time was spent by an earlier sweep
    text = sweep_summary([("a", *completed), ("b", *skipped), ("c", "failed", 1.0, "NonFiniteLoss")])
    assert text.splitlines()[-1] == timing.phase_totals([FULL])
    assert sweep_summary([("c", "failed", 1.0, "NonFiniteLoss")]).splitlines()[-1].startswith("  failed")


def test_cli_sweep_prints_where_the_time_went(tmp_path):
    proc = run_cli(["-m", *TINY_RUN[:-1], f"run.root={tmp_path}/out", "trainer.lr=1e-3,2e-3"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = proc.stdout.splitlines()[[ln.startswith("sweep: ") for ln in proc.stdout.splitlines()].index(True) + 3]
    assert line.startswith("time: setup ") and " · train " in line and " · eval " in line and " · save " in line
    assert line.endswith(" over 2 runs"), proc.stdout
    for path in (tmp_path / "out").rglob("results.json"):
        assert_adds_up(json.loads(path.read_text())["timing"])


def test_failed_run_record_keeps_its_phases(tmp_path, monkeypatch):
    """A run that fails after training (here: its first evaluation) still says where its time went."""
    import spafit_exp.engine.loop as loop

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(loop, "evaluate", boom)
    cfg = tiny(tmp_path, "trainer.checkpoint_every=2")
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(cfg)
    record = results.read(run_dir(cfg))
    assert record["status"] == "failed"
    assert_adds_up(record["timing"])
    assert record["timing"]["train_samples_per_s"] > 0 and "train_tokens_per_s" not in record["timing"]
