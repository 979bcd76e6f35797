"""Sweeps with real (tiny) runs: plan → launch the printed command with submitit → plan says all completed;
every record carries its cost (peak memory, tokens, throughput), failed ones included; a preempted submitit job
checkpoints at its step, is requeued and resumes."""

import os
import shlex
import signal
import subprocess
import sys
import time

from spafit_exp.core import results
from spafit_exp.core.run_dir import RunDir
from spafit_exp.sweep import cli as sweep
from tests.conftest import TINY_RUN, run_cli

GRID = [*TINY_RUN[:-1], "trainer.lr=1e-3,2e-3"]  # TINY_RUN without its single learning rate


def _plan(capsys, *args) -> list[str]:
    assert sweep.main(["plan", "-m", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_plan_launch_the_rest_with_submitit_then_nothing_left(tmp_path, capsys):
    first = run_cli(["-m", f"run.root={tmp_path}/out", *GRID, "trainer.seed=1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    args = [f"run.root={tmp_path}/out", *GRID, "trainer.seed=1,2", "launcher=submitit_local"]
    lines = _plan(capsys, *args)
    assert "runs=4" in lines and "completed=2 failed=0 interrupted=0 crashed=0 running=0 corrupt=0 refused=0 todo=2" \
        in lines
    assert any(line.startswith("estimate: 2 runs to launch") and "2 from the throughput of finished runs" in line
               for line in lines)
    commands = [shlex.split(line) for line in lines if line.startswith("  python -m spafit_exp -m ")]
    assert len(commands) == 1 and "launcher=submitit_local" in commands[0] and "trainer.seed=2" in commands[0]
    launched = subprocess.run([sys.executable, *commands[0][1:]], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert launched.returncode == 0, launched.stderr[-3000:]
    logged = launched.stdout + launched.stderr
    assert logged.count("#0 :") == 1 and logged.count("#1 :") == 1 and "#2 :" not in logged  # two jobs, not four
    lines = _plan(capsys, *args)
    assert "runs=4" in lines and "completed=4 failed=0 interrupted=0 crashed=0 running=0 corrupt=0 refused=0 todo=0" \
        in lines
    assert lines[-1] == "nothing to launch: every run is completed"
    records = [results.read(path.parent) for path in (tmp_path / "out").rglob("results.json")]
    assert len(records) == 4
    for record in records:  # the cost of every run is in its record
        assert record["memory"]["peak_bytes"] > 0
        assert record["train"]["tokens"] > record["train"]["samples"] > 0
        assert record["timing"]["train_tokens_per_s"] > 0
    assert sweep.main(["status", "default", "--root", f"{tmp_path}/out", *args[1:]]) == 0
    status = capsys.readouterr().out
    assert "completed=4 failed=0" in status and "slowest completed runs:" in status


def test_failed_record_has_its_memory_and_groups_by_error(tmp_path, capsys):
    proc = run_cli([f"run.root={tmp_path}", *TINY_RUN[:-1], "trainer.log_every=1", "trainer.lr=1e30"], cwd=tmp_path)
    assert proc.returncode != 0
    record = results.read(tmp_path / "default/rte/full_ft/tiny_bert/lr=1e+30/seed=1")
    assert record["status"] == "failed" and record["memory"]["peak_bytes"] > 0
    assert sweep.main(["status", "default", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "failed=1" in out and "NonFiniteLoss: non-finite training loss" in out and "step <n>" in out


def test_preempted_submitit_job_is_requeued_and_resumes(tmp_path):
    """USR2 (Slurm's warning before preemption or the time limit, as submitit sets it up): the run checkpoints at
    its step, records `interrupted`, submitit requeues the job, and the requeued job resumes to completion."""
    args = ["-m", "launcher=submitit_local", f"run.root={tmp_path}/out", "model=tiny_bert", "trainer.epochs=1",
            "trainer.max_train_samples=96", "trainer.max_eval_samples=16", "trainer.batch_size=4",
            "trainer.max_len=32", "trainer.checkpoint_every=2", "trainer.lr=1e-3"]
    proc = subprocess.Popen([sys.executable, "-m", "spafit_exp", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    directory = tmp_path / "out/default/rte/full_ft/tiny_bert/lr=0.001/seed=1"
    deadline = time.monotonic() + 300
    while not RunDir(directory).resumable and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    owner = RunDir(directory).lock_owner().split()
    assert len(owner) == 2 and RunDir(directory).lock_held(), "the job never checkpointed"
    os.kill(int(owner[1]), signal.SIGUSR2)  # the job's process, as its lock file names it
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    record = results.read(directory)
    assert record["status"] == "completed" and record["timing"]["earlier_sessions_s"] > 0  # resumed
    log = (directory / "run.log").read_text()
    assert "SIGUSR2: stopping after this step" in log and "resumed at epoch 1" in log
    submitit_logs = "".join(p.read_text() for p in (tmp_path / "out/default/.submitit").rglob("*_log.*"))
    assert "Requeued job" in submitit_logs
