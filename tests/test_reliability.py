"""Failure records, resume after interruption or SIGKILL, and concurrent sweeps into one outputs/ folder."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from spafit_exp.core import results
from spafit_exp.engine.artefacts import TRAINABLE_FILE
from spafit_exp.engine.resume import RESUME_FILE, read_resume
from spafit_exp.inputs.data import load_task_data
from spafit_exp.inputs.modeling import build_tokenizer
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from spafit_exp.run.spec import resolve
from tests.conftest import TINY_RUN, compose, run_cli


def tiny(root, *extra):
    return compose([*TINY_RUN, f"run.root={root}", "trainer.max_train_samples=96", "trainer.epochs=2",
                    "trainer.checkpoint_every=3", "trainer.log_every=2", "model.arch.hidden_size=32", *extra])


@pytest.mark.parametrize("method", [[], ["method=stoc_tuning", "method.k=500"],
                                    ["method=dps_mix", "method.update_ratio=0.1"],
                                    ["method=subset", "selector=random", "selector.k=500", "decoder.epochs=1"],
                                    # an evaluation at the cut's own step (5), early stopping counted across it
                                    ["trainer.eval_every=5", "trainer.early_stopping_patience=1"]],
                         ids=["full_ft", "stoc_tuning", "dps_mix", "subset", "eval_every"])
def test_stop_checkpoints_and_resume_matches_uninterrupted(tmp_path, method):
    """Stop after step 5 (what SIGTERM does), then rerun: same losses and metrics as one uninterrupted run.
    For the per-step samplers the checkpoint carries the generator and the selection state too; a fixed subset's
    weights are rebuilt from its restored selected values."""
    from accelerate import Accelerator

    from spafit_exp.engine.loop import StopRequested, train
    from spafit_exp.run.app import prepare as build_prepared

    reference = run(tiny(tmp_path / "ref", *method))
    cfg = tiny(tmp_path / "cut", *method)
    directory = run_dir(cfg)
    spec = resolve(cfg)
    data = load_task_data(spec, build_tokenizer(spec.model))
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(StopRequested):
        train(spec, build_prepared(spec), data, Accelerator(), checkpoint_dir=directory, stop=stop)
    saved = read_resume(directory)
    assert saved["position"]["epoch"] == 1 and saved["position"]["batch"] == saved["result"]["steps"] == 5  # mid-epoch
    resumed = run(cfg)
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["train"] == reference["train"]
    trained = [load_file(run_dir(c) / TRAINABLE_FILE) for c in (cfg, tiny(tmp_path / "ref", *method))]
    assert trained[0].keys() == trained[1].keys()
    for name in trained[0]:  # the best epoch's trained tensors, bit for bit
        assert torch.equal(trained[0][name], trained[1][name]), name
    assert not (directory / RESUME_FILE).exists()  # dropped once completed


def test_sigkill_mid_epoch_then_resume(tmp_path):
    args = [f"run.root={tmp_path}/out", "trainer.max_train_samples=64", "trainer.max_eval_samples=32", "trainer.epochs=2",
            "trainer.batch_size=8", "trainer.max_len=32", "trainer.checkpoint_every=2", "trainer.lr=5e-5",
            "method=full_bitfit"]
    reference = run_cli([f"run.root={tmp_path}/ref", *args[1:]], cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]
    proc = subprocess.Popen([sys.executable, "-m", "spafit_exp", *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ.copy())
    directory = tmp_path / "out/default/rte/full_bitfit/minilm/lr=5e-05/seed=1"
    deadline = time.monotonic() + 600  # a hang guard: a busy machine may take minutes to get there
    while not (directory / RESUME_FILE).exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = results.read(directory)
    assert killed["status"] == "running" and (directory / RESUME_FILE).exists()
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0 and "resumed at epoch" in again.stdout + again.stderr, again.stderr[-2000:]
    done = results.read(directory)
    ref = results.read(tmp_path / "ref/default/rte/full_bitfit/minilm/lr=5e-05/seed=1")
    assert done["status"] == "completed"
    assert done["metrics"] == ref["metrics"] and done["train"]["losses"] == ref["train"]["losses"]


def test_sigterm_one_line_exit_143_and_wall_time_adds_up(tmp_path):
    args = [f"run.root={tmp_path}/out", "trainer.max_train_samples=256", "trainer.max_eval_samples=16",
            "trainer.epochs=1", "trainer.batch_size=8", "trainer.max_len=32", "trainer.checkpoint_every=4",
            "trainer.eval_train_samples=0", "method=full_bitfit"]
    proc = subprocess.Popen([sys.executable, "-m", "spafit_exp", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    directory = tmp_path / "out/default/rte/full_bitfit/minilm/lr=0.006/seed=1"
    deadline = time.monotonic() + 600  # a hang guard: a busy machine may take minutes to get there
    while not (directory / RESUME_FILE).exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and [ln for ln in err.splitlines() if ln.startswith("interrupted: ")]
    first = results.read(directory)
    assert first["status"] == "interrupted" and first["timing"]["wall_s"] > 0
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0 and "resumed at epoch" in again.stdout + again.stderr
    done = results.read(directory)
    assert done["timing"]["earlier_sessions_s"] == first["timing"]["wall_s"]
    assert done["timing"]["wall_s"] > first["timing"]["wall_s"]


def test_nan_loss_recorded_and_multirun_goes_on(tmp_path):
    proc = run_cli(["-m", f"run.root={tmp_path}/out", *TINY_RUN[:-1], "trainer.log_every=1", "trainer.lr=1e30,1e-3"],
                   cwd=tmp_path)
    assert proc.returncode != 0  # the sweep reports its failure at the end
    failed = results.read(tmp_path / "out/default/rte/full_ft/tiny_bert/lr=1e+30/seed=1")
    assert failed["status"] == "failed" and "non-finite training loss" in failed["error"]
    assert failed["failed_step"] >= 1
    ok = results.read(tmp_path / "out/default/rte/full_ft/tiny_bert/lr=0.001/seed=1")
    assert ok["status"] == "completed"


def test_exception_becomes_failed_record(tmp_path, monkeypatch):
    import spafit_exp.engine.loop as train_module

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(train_module, "evaluate", boom)
    cfg = tiny(tmp_path)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(cfg)
    record = results.read(run_dir(cfg))
    assert record["status"] == "failed" and record["error"] == "RuntimeError: disk on fire"
    assert "Traceback" in record["traceback"]


def test_concurrent_sweeps_run_each_job_once(tmp_path):
    common = ["-m", f"run.root={tmp_path}/out", *TINY_RUN[:-1]]
    cmd = [sys.executable, "-m", "spafit_exp"]
    procs = [subprocess.Popen([*cmd, *common, f"trainer.lr={grid}"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
             for grid in ("1e-3,2e-3,3e-3", "3e-3,2e-3,4e-3")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    done = sum(o.count("done: ") for o in outs)
    skipped = sum(o.count("skip: ") for o in outs)
    assert done == 4 and skipped == 2, outs
    records = sorted((tmp_path / "out").rglob("results.json"))
    assert len(records) == 4
    for path in records:
        assert json.loads(path.read_text())["status"] == "completed"
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_replace_atomically_keeps_the_old_file_when_writing_fails(tmp_path):
    """The one temp-and-rename used for checkpoints, trainable tensors, decoder heads and gradient statistics."""
    path = tmp_path / "state.pt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with results.replace_atomically(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
    with results.replace_atomically(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_non_finite_loss_survives_pickling():
    """submitit pickles a failed job's exception back to the launcher: a NaN failure must not become a TypeError."""
    import pickle

    from spafit_exp.engine.loop import NonFiniteLoss

    err = pickle.loads(pickle.dumps(NonFiniteLoss(7, float("nan"))))
    assert isinstance(err, NonFiniteLoss) and err.step == 7 and "step 7" in str(err)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_at_the_first_record_leaves_nothing(tmp_path, monkeypatch):
    """Nothing could be recorded: no record, `.lock`, `run.log` or empty folder is left to look like a run."""
    real_dump = results.json.dump

    def dump(obj, handle, *args, **kwargs):
        return no_space() if results.RESULTS in handle.name else real_dump(obj, handle, *args, **kwargs)

    monkeypatch.setattr(results.json, "dump", dump)
    cfg = tiny(tmp_path)
    with pytest.raises(results.WriteFailed, match=f"cannot write {run_dir(cfg)}/results.json: No space left"):
        run(cfg)
    assert not (tmp_path / "default").exists()


@pytest.mark.parametrize("module,writer,written", [("spafit_exp.engine.artefacts", "save_file", TRAINABLE_FILE),
                                                   ("spafit_exp.engine.resume", "torch.save", RESUME_FILE)],
                         ids=["trained_tensors", "checkpoint"])
def test_disk_full_writing_tensors_is_one_line_and_a_failed_record(tmp_path, module, writer, written):
    """The real command line, with safetensors' or torch's writer failing as on a full disk."""
    code = (f"import errno, sys\nimport {module}\n"
            "def full(*args, **kwargs):\n    raise OSError(errno.ENOSPC, 'No space left on device')\n"
            f"{module}.{writer} = full\nfrom spafit_exp.__main__ import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code, *TINY_RUN, "trainer.checkpoint_every=2", f"run.root={tmp_path}/out"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    directory = tmp_path / "out/default/rte/full_ft/tiny_bert/lr=0.001/seed=1"
    expected = f"cannot write {directory}/{written}: No space left on device"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")] == [f"error: {expected}"]
    record = results.read(directory)
    assert record["status"] == "failed" and expected in record["error"]
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_run_log_that_cannot_be_written_does_not_stop_the_run():
    """A full disk refusing run.log lines: the console goes on, the run reaches its own outcome."""
    import io

    from spafit_exp.run.console import _Tee

    class FullDisk(io.StringIO):
        write = no_space

    console = io.StringIO()
    tee = _Tee(console, FullDisk())
    print("epoch 1", file=tee)
    print("epoch 2", file=tee)
    assert console.getvalue() == "epoch 1\nepoch 2\n"


def test_a_writers_own_disk_full_error_names_the_file(tmp_path, monkeypatch):
    """safetensors (SafetensorError) and torch.save (RuntimeError) report a full disk as no OSError."""
    from types import SimpleNamespace

    with pytest.raises(results.WriteFailed, match=f"cannot write {tmp_path}/{TRAINABLE_FILE}: No space left"):
        with results.replace_atomically(tmp_path / TRAINABLE_FILE):
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    with monkeypatch.context() as patched:
        patched.setattr(os, "statvfs", lambda folder: SimpleNamespace(f_bavail=0))  # the temp took the last block
        with pytest.raises(results.WriteFailed, match=f"cannot write {tmp_path}/{RESUME_FILE}: No space left"):
            with results.replace_atomically(tmp_path / RESUME_FILE):
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    with pytest.raises(RuntimeError, match="not the disk"):  # any other error is the writer's own
        with results.replace_atomically(tmp_path / RESUME_FILE):
            raise RuntimeError("not the disk")
    assert list(tmp_path.iterdir()) == []
