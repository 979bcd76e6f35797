"""`python -m spafit_exp.sweep plan|status`: the expansion equals Hydra's sweep, fast and without model code;
run states from records and locks; failures grouped by error; launch commands cover exactly what is left. The
real-run end to end (tiny sweep, submitit relaunch, preemption requeue) is in test_sweep_e2e.py."""

import fcntl
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from spafit_exp import CONF_DIR, REPO_ROOT
from spafit_exp.core import results, run_files
from spafit_exp.core.run_dir import RunDir
from spafit_exp.sweep import cli as sweep
from spafit_exp.sweep.plan import expand, launch_commands, rectangles
from tests.conftest import compose

TINY = ["model=tiny_bert", "trainer.max_train_samples=32", "trainer.max_eval_samples=32", "trainer.epochs=1",
        "trainer.batch_size=8", "trainer.max_len=64"]


def _preset_size(name: str) -> int:
    """Runs of a preset, counted from its YAML and its LR grid's (independently of the code under test)."""
    params = dict(OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml").hydra.sweeper.params)
    grid = next(d for d in OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml").defaults
                if "override /lr_grid" in d)["override /lr_grid"]
    params.update(OmegaConf.load(CONF_DIR / "lr_grid" / f"{grid}.yaml").hydra.sweeper.params)
    return math.prod(len(str(v).split(",")) for v in params.values())


def test_plan_of_the_paper_preset_is_fast_exact_and_loads_no_model_code(tmp_path):
    """Fast by construction, not by the clock (a busy machine is slow whatever the code): no model library is
    imported, and Hydra composes one config per choice of config groups (task × method), not one per job. The
    plan's own time is benchmarked (scripts/bench_cli.py)."""
    code = ("import sys\nfrom hydra._internal.config_loader_impl import ConfigLoaderImpl\ncomposed = []\n"
            "load = ConfigLoaderImpl.load_sweep_config\n"
            "ConfigLoaderImpl.load_sweep_config = lambda self, *a: composed.append(a) or load(self, *a)\n"
            "from spafit_exp.sweep import cli as sweep\n"
            f"code = sweep.main(['plan', '-m', 'experiment=stoc_table1', 'run.root={tmp_path}'])\n"
            "print('composed', len(composed))\n"
            "print('heavy', sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'accelerate', 'peft', 'datasets')))\nsys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    expected = _preset_size("stoc_table1")
    assert expected == 6 * 6 * 7 * len(str(OmegaConf.load(CONF_DIR / "experiment/stoc_table1.yaml")
                                           .hydra.sweeper.params.method).split(","))
    assert f"runs={expected}" in lines
    assert f"completed=0 failed=0 interrupted=0 crashed=0 running=0 corrupt=0 refused=0 todo={expected}" in lines
    assert f"→ {tmp_path}/stoc_table1/" in proc.stdout  # the preset's experiment_name is its output folder
    assert "heavy []" in lines  # neither torch nor any model library was imported
    methods = len(str(OmegaConf.load(CONF_DIR / "experiment/stoc_table1.yaml").hydra.sweeper.params.method).split(","))
    assert f"composed {6 * methods}" in lines  # once per task × method, for all `expected` jobs
    assert "h of compute" in proc.stdout and "assumed" in proc.stdout  # nothing finished: the FLOPs estimate
    commands = [line.strip() for line in lines if line.startswith("  python -m spafit_exp -m ")]
    assert len(commands) == 1 and "experiment=stoc_table1" in commands[0]
    assert not list(tmp_path.iterdir())  # planning writes nothing


def test_planned_directories_are_the_ones_each_job_composes():
    """The shortcut (compose per group choice, then apply value overrides) gives each job's own run.dir and
    settings: checked against a full compose of the job's overrides, as the launcher composes it."""
    plan = expand(["-m", "experiment=stoc_table1", "task=rte,mrpc", "method=full_ft,stoc_tuning", "trainer.seed=1,7"])
    assert len(plan.jobs) == 2 * 2 * 2 * 6 and plan.sweep_keys == ["trainer.lr", "task", "method", "trainer.seed"]
    for job in plan.jobs[::7]:
        cfg = compose(list(job.overrides))
        assert str(job.run_dir) == cfg.run.dir
        assert (job.task, job.method_tag, job.model, job.lr, job.seed, job.batch_size) == \
            (cfg.task.name, cfg.method.tag, cfg.model.name, cfg.trainer.lr, cfg.trainer.seed, cfg.trainer.batch_size)


def test_command_line_keys_replace_the_presets_sweep():
    plan = expand(["-m", "experiment=stoc_table1", "task=rte", "trainer.seed=1,2", "model=roberta_large"])
    assert plan.sweep_keys == ["trainer.lr", "method", "trainer.seed"]  # task is no longer swept
    assert len(plan.jobs) == 6 * len(plan.sweep_values["method"]) * 2
    assert {job.task for job in plan.jobs} == {"rte"} and {job.model for job in plan.jobs} == {"roberta_large"}


@pytest.mark.parametrize("args,needle", [(["trainer.lrr=1"], "trainer.lrr"), (["task=nope"], "task=nope"),
                                         (["trainer.lr=[1,2"], "bad override")])
def test_bad_override_is_one_line_and_exit_2(args, needle, capsys):
    assert sweep.main(["plan", "-m", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_rectangles_cover_exactly_the_points_given():
    order = [["a", "b", "c"], ["1", "2"], ["x", "y"]]
    grid = [(a, n, x) for a in order[0] for n in order[1] for x in order[2]]
    assert rectangles(grid, order) == [(("a", "b", "c"), ("1", "2"), ("x", "y"))]
    left = [p for p in grid if p != ("b", "2", "y")]
    pieces = rectangles(left, order)
    covered = [(a, n, x) for piece in pieces for a in piece[0] for n in piece[1] for x in piece[2]]
    assert sorted(covered) == sorted(left) and len(covered) == len(set(covered)) and len(pieces) <= 3


def _write(directory: Path, status: str, **fields) -> None:
    record = {"status": status, "task": "rte", "method_tag": "full_ft", "model": "tiny_bert", **fields}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(record))


def _status_lines(capsys, *args) -> list[str]:
    assert sweep.main(["status", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_status_puts_each_record_in_its_bucket(tmp_path, capsys):
    grid = [*TINY, "trainer.lr=1e-3,2e-3", "trainer.seed=1,2,3,4,5"]
    plan = expand([f"run.root={tmp_path}", *grid])
    d = {(job.lr, job.seed): job.run_dir for job in plan.jobs}
    _write(d[1e-3, 1], "completed", timing={"wall_s": 12.0, "train_s": 10.0, "train_tokens_per_s": 100.0},
           train={"samples": 32, "tokens": 1600}, data={"train_rows": 32}, memory={"peak_bytes": 2**30})
    for seed, step in [(2, 3), (3, 7)]:  # NonFiniteLoss's record, twice, at different steps: one group
        _write(d[1e-3, seed], "failed", error=f"NonFiniteLoss: non-finite training loss nan at optimizer step {step}",
               failed_step=step)
    _write(d[1e-3, 4], "interrupted", error="StopRequested: interrupted at optimizer step 5")
    (d[1e-3, 4] / "resume.pt").write_bytes(b"checkpoint")
    _write(d[1e-3, 5], "running")  # killed: its lock is free
    _write(d[2e-3, 1], "running")
    lock = RunDir(d[2e-3, 1]).lock()  # a live owner
    d[2e-3, 2].mkdir(parents=True)
    (d[2e-3, 2] / "results.json").write_text('{"status": "comp')  # cut short
    _write(d[2e-3, 3], "completed", fingerprint={"hash": "another-recipe"})
    try:
        plan = expand([f"run.root={tmp_path}", *grid])  # now with records: their recipes are compared
        lines = _status_lines(capsys, "default", "--root", str(tmp_path), *grid)
        assert "runs=10" in lines
        assert "completed=1 failed=2 interrupted=1 crashed=1 running=1 corrupt=1 refused=1 todo=2" in lines
        text = "\n".join(lines)
        assert "2  NonFiniteLoss: non-finite training loss nan at optimizer step <n> (steps 3, 7)" in text
        assert f"{d[2e-3, 1]}  {RunDir(d[2e-3, 1]).lock_owner()}" in text  # running: host and pid from .lock
        assert "slowest completed runs:" in text and "peak 1.00 GiB" in text
        # the command launches exactly the failed, interrupted, crashed, corrupt and never-started runs
        commands = [line.strip() for line in lines if line.startswith("  python -m spafit_exp -m ")]
        relaunched = [job.run_dir for command in commands for job in expand(shlex.split(command)[4:]).jobs]
        assert len(relaunched) == len(set(relaunched))
        relaunched = set(relaunched)
        assert relaunched == {d[k] for k in [(1e-3, 2), (1e-3, 3), (1e-3, 4), (1e-3, 5), (2e-3, 2), (2e-3, 4),
                                             (2e-3, 5)]}
        assert len(launch_commands(plan, plan.jobs)) == 1  # the whole grid is one command
        # without a sweep, only what is on disk: never-started runs are unknown
        folder_only = _status_lines(capsys, "default", "--root", str(tmp_path))
        # (and no recipe to compare: the record of another recipe reads as completed)
        assert "completed=2 failed=2 interrupted=1 crashed=1 running=1 corrupt=1 refused=0 todo=?" in folder_only
        overview = _status_lines(capsys, "--root", str(tmp_path))
        assert any(line.strip().startswith("default  runs=8 completed=2") for line in overview)
    finally:
        run_files.release_lock(lock)


def test_watch_refreshes_until_nothing_runs(tmp_path, capsys, monkeypatch):
    grid = [*TINY, "trainer.lr=1e-3", "trainer.seed=1,2"]
    plan = expand([f"run.root={tmp_path}", *grid])
    _write(plan.jobs[0].run_dir, "completed")
    _write(plan.jobs[1].run_dir, "running")
    lock = RunDir(plan.jobs[1].run_dir).lock()
    waits = []

    def finish_while_waiting(seconds):  # the run ends during the first wait, however long a report takes
        waits.append(seconds)
        if len(waits) == 1:
            _write(plan.jobs[1].run_dir, "completed")
            run_files.release_lock(lock)

    monkeypatch.setattr(sweep.time, "sleep", finish_while_waiting)
    lines = _status_lines(capsys, "default", "--root", str(tmp_path), "--watch", "0.2", *grid)
    counts = [line for line in lines if line.startswith("completed=")]
    assert waits == [0.2] and len(counts) == 2
    assert "running=1" in counts[0] and counts[1].startswith("completed=2 ")


def test_lock_probe_never_steals_a_directory(tmp_path, monkeypatch):
    """A job that starts while `status` probes its lock still gets it (it retries a few times, briefly)."""
    from spafit_exp.core import run_files

    (tmp_path / run_files.LOCK).write_text("")
    fd = os.open(tmp_path / run_files.LOCK, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what lock_is_held holds for a moment
    waits = []
    # the probe ends during the job's first wait (a timer thread could be late on a busy machine)
    monkeypatch.setattr(run_files.time, "sleep", lambda seconds: waits.append(seconds) or os.close(fd))
    handle = RunDir(tmp_path).lock()
    assert waits == [run_files.LOCK_RETRY_S]
    assert handle is not None and RunDir(tmp_path).lock_held()
    run_files.release_lock(handle)
    assert not RunDir(tmp_path).lock_held()


def test_sweep_module_runs_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "spafit_exp.sweep", "status", "--root", str(tmp_path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "no run directories" in proc.stdout, proc.stderr


def test_status_counts_damaged_records_corrupt_and_names_each(tmp_path):
    """Fields of the wrong type, a FIFO and a link named results.json: each run is `corrupt`, named with what is
    wrong, and the rest is reported (in a subprocess: a FIFO read would hang the test, not the suite)."""
    folder = tmp_path / "default"
    good = {"timing": {"wall_s": 12.0}, "memory": {"peak_bytes": 2**30}}
    _write(folder / "ok", "completed", **good)
    _write(folder / "timing", "completed", timing="fast")
    _write(folder / "experiment", "completed", experiment=["default"], **good)
    _write(folder / "escape", "completed", task="../../..", **good)
    (folder / "fifo").mkdir()
    os.mkfifo(folder / "fifo" / "results.json")
    _write(tmp_path / "elsewhere", "completed", **good)
    (folder / "link").mkdir()
    (folder / "link" / "results.json").symlink_to(tmp_path / "elsewhere" / "results.json")
    proc = subprocess.run([sys.executable, "-m", "spafit_exp.sweep", "status", "default", "--root", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "completed=1 failed=0 interrupted=0 crashed=0 running=0 corrupt=5 refused=0 todo=?" in lines, lines
    for name, why in [("timing", "malformed record (timing: must be an object, not str)"),
                      ("experiment", "malformed record (experiment=['default']: must be a string, not list)"),
                      ("escape", "malformed record (task='../../..': must be one directory name"),
                      ("fifo", "unreadable record (OSError: not a plain file"),
                      ("link", "unreadable record (OSError: a symbolic link")]:
        assert sum(f"{folder / name}/results.json: {why}" in line for line in lines) == 1, (name, lines)
    assert any(line.strip().endswith(str(folder / "ok")) for line in lines)  # the slowest runs: the good one only


def test_a_rerun_sets_a_planted_fifo_or_link_record_aside(tmp_path):
    """What `corrupt` promises (a rerun keeps the record aside and redoes the run) holds for a FIFO or a link
    named results.json too: the entry itself is moved, never opened or followed."""
    _write(tmp_path / "elsewhere", "completed")
    os.mkfifo(tmp_path / "results.json")
    for planted in ("fifo", "link"):
        with pytest.raises(results.CorruptRecord, match="unreadable record"):
            results.read(tmp_path)
        kept = RunDir(tmp_path).set_aside("corrupt")
        assert kept is not None and results.read(tmp_path) is None
        assert kept.is_symlink() == (planted == "link") and (tmp_path / "elsewhere" / "results.json").is_file()
        (tmp_path / "results.json").symlink_to(tmp_path / "elsewhere" / "results.json")


def test_slurm_launcher_submits_arrays_that_requeue(tmp_path, capsys):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        launcher = hydra_compose("config", ["launcher=slurm"], return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")  # hydra-submitit: map_array, one job array per sweep
    assert launcher.array_parallelism == 64 and launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0
    lines = [line.strip() for line in _plan_lines(capsys, f"run.root={tmp_path}", *TINY, "trainer.lr=1e-3,2e-3",
                                                   "launcher=slurm", "hydra.launcher.partition=gpu")]
    command = next(line for line in lines if line.startswith("python -m spafit_exp -m "))
    assert "launcher=slurm" in command and "hydra.launcher.partition=gpu" in command
    assert command.endswith("trainer.lr=0.001,0.002")


def _plan_lines(capsys, *args) -> list[str]:
    assert sweep.main(["plan", "-m", *args]) == 0
    return capsys.readouterr().out.splitlines()
