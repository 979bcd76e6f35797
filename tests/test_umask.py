"""Every file a run writes is created 0o666 less the user's umask, as any tool's files are: with a group-readable
umask on a shared cluster filesystem colleagues can read the records and tensors, with a private one they cannot.
(safetensors writes a 0600 file of its own in place of the atomic write's temp file; it gets the temp's mode back.)"""

import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from spafit_exp.core import results
from spafit_exp.core.run_files import open_plain
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from tests.conftest import TINY_RUN, compose


@pytest.fixture
def umask():
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_run_files_follow_the_umask(tmp_path, umask):
    umask(0o022)
    cfg = compose([*TINY_RUN, f"run.root={tmp_path}", "trainer.epochs=1"])
    record = run(cfg)
    assert record["status"] == "completed"
    directory = run_dir(cfg)
    modes = {name: mode(directory / name) for name in ("results.json", "trainable.safetensors", "run.log", ".lock")}
    assert modes == dict.fromkeys(modes, 0o644)


@pytest.mark.parametrize("mask", [0o002, 0o022, 0o077], ids=oct)
def test_atomic_writes_and_run_files_get_0666_less_the_umask(tmp_path, umask, mask):
    umask(mask)
    results.write_json_atomic(tmp_path / "results.json", {"status": "completed"})
    with results.replace_atomically(tmp_path / "trainable.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    with results.replace_atomically(tmp_path / "resume.pt") as tmp:
        torch.save({"w": torch.zeros(2)}, tmp)
    os.close(open_plain(tmp_path / "run.log", os.O_WRONLY | os.O_CREAT))
    expected = 0o666 & ~mask
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == dict.fromkeys(
        ["results.json", "trainable.safetensors", "resume.pt", "run.log"], expected)
    assert json.loads((tmp_path / "results.json").read_text()) == {"status": "completed"}
