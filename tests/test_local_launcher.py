"""launcher=local: jobs × threads chosen from the cores (pure rule), the thread count applied in each worker
process, bad values refused in one line, and the launching process's summary read back from the records on disk
(the same table and exit code as launcher=basic, one failing job not stopping the others)."""

import os
import subprocess
import sys

import pytest
import torch

from spafit_exp import __main__ as cli
from spafit_exp.core import results
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.record import Record
from spafit_exp.core.run_dir import RunDir
from spafit_exp.run import packing
from spafit_exp.sweep import local as local_sweep
from tests.conftest import REPO, TINY_RUN


@pytest.mark.parametrize("jobs, cpus, n_jobs, threads, expected", [
    (24, 16, "auto", "auto", (16, 1)),  # more jobs than cores: one job per core, one thread each
    (24, 2, "auto", "auto", (2, 1)),
    (3, 16, "auto", "auto", (3, 5)),  # fewer jobs than cores: the cores shared out among them
    (1, 8, "auto", "auto", (1, 8)),
    (24, 16, 4, "auto", (4, 4)),  # explicit jobs at a time: threads follow
    (2, 16, 8, "auto", (2, 8)),  # no more at a time than the sweep has jobs
    (24, 16, 4, 1, (4, 1)),  # explicit threads win
    (24, 2, 8, "auto", (8, 1)),  # oversubscribed on request: still at least one thread
])
def test_jobs_and_threads_from_the_cores(jobs, cpus, n_jobs, threads, expected):
    assert packing.choose(jobs, cpus, n_jobs, threads) == expected


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "1,2", ""])
def test_a_bad_count_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError, match=rf"^hydra\.launcher\.n_jobs={value}: must be auto or a positive integer"):
        packing.parse(packing.N_JOBS_KEY, value)
    assert packing.parse(packing.THREADS_KEY, "auto") == "auto" and packing.parse(packing.THREADS_KEY, " 3") == 3


def test_cores_follow_the_affinity_mask():
    """A process pinned to one CPU counts one core, whatever the machine has."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from spafit_exp.run.packing import cores; print(cores())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "LOKY_MAX_CPU_COUNT"})
    assert out.stdout.strip() == "1", out.stderr


def test_the_choice_replaces_the_command_lines_n_jobs():
    argv = ["-m", "trainer.lr=1,2", "hydra.launcher.n_jobs=auto", "launcher=local", "launcher.threads=auto"]
    assert packing.overrides_of(argv) == {packing.N_JOBS_KEY: "auto", packing.THREADS_KEY: "auto"}
    assert packing.with_n_jobs(argv, 3) == ["-m", "trainer.lr=1,2", "launcher=local", "launcher.threads=auto",
                                            "hydra.launcher.n_jobs=3"]


@pytest.mark.parametrize("jobs, n_jobs, threads", [(24, "auto", "auto"), (3, "auto", "auto"), (24, 1, "auto"),
                                                   (24, "auto", 3)])
def test_each_job_derives_the_threads_the_launching_process_chose(jobs, n_jobs, threads):
    """Only n_jobs is passed on (a run's stored overrides keep what the user typed); a job's rule agrees."""
    at_once, per_job = packing.choose(jobs, packing.cores(), n_jobs, threads)
    assert packing.job_threads(threads, at_once) == per_job


def test_apply_threads_sets_torch_and_the_variables_workers_inherit(monkeypatch):
    before = torch.get_num_threads()
    for var in packing.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    wanted = before + 1  # above the default torch caps the variables at: only set_num_threads gives it
    try:
        packing.apply_threads(wanted)
        assert torch.get_num_threads() == wanted
        assert all(os.environ[var] == str(wanted) for var in packing.THREAD_VARS)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", ["hydra.launcher.n_jobs=0", "hydra.launcher.n_jobs=abc", "launcher.threads=0"])
def test_bad_values_exit_2_with_one_line_and_nothing_written(tmp_path, monkeypatch, capsys, bad):
    root = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["spafit_exp", "-m", f"run.root={root}", *TINY_RUN[:-1], "trainer.lr=1e-3,2e-3",
                                      "launcher=local", bad])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {bad}: must be auto or a positive")
    assert not root.exists()


def _record(directory, **fields):
    directory.mkdir(parents=True, exist_ok=True)
    RunDir(directory).write(Record.from_json({"main_metric": "accuracy", **fields}))


def test_summary_rows_from_the_records_on_disk(tmp_path):
    """What each job's directory held before the launch and holds after it, as the basic launcher reports it."""
    done, other, fresh, failed, silent, crashed = (tmp_path / name for name in
                                                   ("done", "other", "fresh", "failed", "silent", "crashed"))
    _record(done, status="completed", metrics={"best": {"dev": {"accuracy": 0.75}}}, fingerprint={"hash": "a"})
    _record(other, status="completed", fingerprint={"hash": "b"})
    before = {d: RunDir(d).state("a") for d in (done, other, fresh, failed, silent, crashed)}
    timing = {"wall_s": 12.0, "earlier_sessions_s": 2.0, "setup_s": 1.0, "train_s": 8.0, "eval_s": 1.0, "save_s": 0.0}
    _record(fresh, status="completed", metrics={"best": {"dev": {"accuracy": 0.5}}}, timing=timing,
            fingerprint={"hash": "a"})
    _record(failed, status="failed", error="NonFiniteLoss: non-finite training loss nan at optimizer step 2",
            timing={"wall_s": 3.0})
    _record(crashed, status="running")  # nobody holds its lock: its process died
    rows = {d.name: local_sweep.outcome(before[d], "a") for d in before}
    assert rows["done"] == (str(done), "skipped", 0.0, "accuracy=0.7500")
    assert rows["other"] == (str(other), "refused", 0.0, "different recipe")
    assert rows["fresh"] == (str(fresh), "completed", 10.0, "accuracy=0.5000", timing)
    assert rows["failed"] == (str(failed), "failed", 3.0,
                              "NonFiniteLoss: non-finite training loss nan at optimizer step 2")
    assert rows["silent"][1] == "failed" and rows["silent"][3].startswith("no record: not started")
    assert rows["crashed"][1] == "failed" and rows["crashed"][3].startswith("crashed")
    summary = cli.sweep_summary(list(rows.values()))
    assert summary.splitlines()[0] == "sweep: 6 jobs — 1 completed, 1 skipped, 3 failed, 1 refused"


def test_ctrl_c_still_prints_the_summary_and_exits_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C ends joblib's wait with KeyboardInterrupt in the launching process: the records say what each job got
    to, and the exit code says interrupted, as a basic sweep's does."""
    for var in packing.THREAD_VARS:  # main() sets them for the workers: restored after the test
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    threads = torch.get_num_threads()

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_hydra_main", interrupted)
    monkeypatch.setattr(sys, "argv", ["spafit_exp", "-m", f"run.root={tmp_path}/out", *TINY_RUN[:-1],
                                      "trainer.lr=1e-3,2e-3", "launcher=local"])
    try:
        with pytest.raises(SystemExit) as stop:
            cli.main()
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert stop.value.code == 130
    assert "sweep: 2 jobs — 0 completed, 0 skipped, 2 failed, 0 refused" in out and "no record: not started" in out
    assert err.strip().splitlines()[-1].startswith("interrupted: rerun the same command to resume")


PROBE = """import os, sys, threading, time
def _watch():  # a process that ran a job (spafit_exp.run.app loaded) writes its torch threads to a file named by its pid
    while True:
        time.sleep(0.2)
        if "spafit_exp.run.app" in sys.modules:
            path = os.path.join(os.environ["PROBE_DIR"], str(os.getpid()))
            with open(path + ".tmp", "w") as f:
                f.write(str(sys.modules["torch"].get_num_threads()))
            os.replace(path + ".tmp", path)
threading.Thread(target=_watch, daemon=True).start()
"""


def test_local_sweep_runs_jobs_side_by_side_and_summarises_from_disk(tmp_path):
    """Three tiny runs, two at a time in worker processes with two torch threads each; the first fails at run time
    (a non-finite loss), the others still run; the launching process prints the summary from the records and
    exits 1."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(PROBE)  # every process of the sweep starts a thread that reports
    (probe / "threads").mkdir()
    python_path = os.pathsep.join(p for p in (str(probe), os.environ.get("PYTHONPATH")) if p)
    args = ["-m", f"run.root={tmp_path}/out", *TINY_RUN[:-1], "trainer.log_every=1", "trainer.lr=1e30,1e-3,2e-3",
            "launcher=local", "hydra.launcher.n_jobs=2", "launcher.threads=2"]
    proc = subprocess.run([sys.executable, "-m", "spafit_exp", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": python_path,
                                            "PROBE_DIR": str(probe / "threads")})
    out = proc.stdout
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "launcher=local: 3 jobs, 2 at a time × 2 torch threads each" in out
    assert "sweep: 3 jobs — 2 completed, 0 skipped, 1 failed, 0 refused" in out
    runs = tmp_path / "out/default/rte/full_ft/tiny_bert"
    rows = {words[2]: words for words in map(str.split, out.splitlines())
            if len(words) > 2 and words[0] in ("completed", "skipped", "failed", "refused")}
    failed = rows[str(runs / "lr=1e+30/seed=1")]
    assert failed[0] == "failed" and failed[3] == "NonFiniteLoss:"
    for lr in ("0.001", "0.002"):
        assert rows[str(runs / f"lr={lr}/seed=1")][0] == "completed"
        assert results.read(runs / f"lr={lr}/seed=1")["status"] == "completed"
    threads = [path.read_text() for path in (probe / "threads").iterdir() if path.suffix != ".tmp"]
    assert len(threads) == 2  # the two workers; the launching process ran no job
    assert set(threads) == {"2"}  # launcher.threads, not loky's default (CPUs // n_jobs)


def test_joblib_launcher_survives_a_non_finite_job_and_prints_the_summary(tmp_path):
    """launcher=joblib (issue 31, item 4): one NaN job used to end the sweep in a Hydra traceback with no summary;
    now the others run, the summary and its exit code are the basic launcher's."""
    args = ["-m", f"run.root={tmp_path}/out", *TINY_RUN[:-1], "trainer.lr=1e30,1e-3", "launcher=joblib"]
    proc = subprocess.run([sys.executable, "-m", "spafit_exp", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "sweep: 2 jobs — 1 completed, 0 skipped, 1 failed, 0 refused" in proc.stdout
    assert "Traceback" not in proc.stderr
    runs = tmp_path / "out/default/rte/full_ft/tiny_bert"
    assert results.read(runs / "lr=0.001/seed=1")["status"] == "completed"
