"""A run writes only inside run.root and only files of its own: values that name folders are one folder name
each, planted symbolic or hard links are refused instead of followed, and a read-only experiment folder is one
line. Bad input of this kind is one line, exit 2, nothing written (CLI checks run in-process: they stop before
Hydra starts)."""

import builtins
import errno
import io
import os
import platform
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from spafit_exp.core import results, run_files
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.record import Record
from spafit_exp.core.run_dir import RunDir
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from tests.conftest import TINY_RUN, compose

DRY = ["model=tiny_bert", "trainer.dry_run=true"]


def cli(monkeypatch, capsys, *args) -> tuple[int, list[str]]:
    """`python -m spafit_exp <args>` in this process: (exit code, non-empty stderr lines)."""
    import spafit_exp.__main__ as entry

    monkeypatch.setattr(sys, "argv", ["spafit_exp", *args])
    monkeypatch.setattr(entry, "SWEEP", [])
    with pytest.raises(SystemExit) as stopped:
        entry.main()
    return stopped.value.code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def files_and_dirs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


ESCAPES = [("experiment_name=../../escaped", "experiment_name"), ("task.name=../../../x", "task.name"),
           ("method.tag=../../../../y", "method.tag"), ("model.name=..", "model.name"),
           ("experiment_name=", "experiment_name"), ("experiment_name=/abs/path", "experiment_name"),
           ("experiment_name='a\tb'", "experiment_name")]


@pytest.mark.parametrize("override,key", ESCAPES, ids=[e[0] for e in ESCAPES])
def test_path_component_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, override, key):
    """Even a dry run: Hydra creates the run directory before the run starts, so the CLI checks first."""
    monkeypatch.chdir(tmp_path)
    code, lines = cli(monkeypatch, capsys, *DRY, f"run.root={tmp_path}/a/b/out", override)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {key}="), lines
    assert files_and_dirs(tmp_path) == []


def test_swept_value_leading_out_of_root_refuses_the_whole_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, lines = cli(monkeypatch, capsys, "-m", *DRY, f"run.root={tmp_path}/a/b/out", "experiment_name=ok,../../esc")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: experiment_name='../../esc'"), lines
    assert files_and_dirs(tmp_path) == []


@pytest.mark.parametrize("run_kind", ["dry", "run"])
def test_run_dir_under_a_planted_symlink_is_refused(tmp_path, monkeypatch, capsys, run_kind):
    """A folder inside run.root that is a link to elsewhere must not carry the run's writes out of run.root."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out/default").symlink_to(elsewhere)
    monkeypatch.chdir(tmp_path)
    if run_kind == "dry":
        code, lines = cli(monkeypatch, capsys, *DRY, f"run.root={tmp_path}/out")
        assert code == 2 and len(lines) == 1 and "resolves outside run.root" in lines[0], lines
    else:
        with pytest.raises(ConfigError, match="resolves outside run.root"):
            run(compose([*TINY_RUN, f"run.root={tmp_path}/out"]))
    assert files_and_dirs(elsewhere) == []


def test_layout_dir_refuses_record_fields_that_leave_root(tmp_path):
    """Studies build run directories from other runs' records, which anyone may have edited."""
    assert RunDir.of(tmp_path, "transfer", "rte", "sst2:full_ft", "minilm", 1e-3, 1).path == \
        tmp_path / "transfer/rte/sst2:full_ft/minilm/lr=0.001/seed=1"
    for fields in [("mlm_probe", "../../x", "t", "m"), ("mlm_probe", "rte", "/abs", "m"), ("", "rte", "t", "m"),
                   ("mlm_probe", "rte", "t", "..")]:
        with pytest.raises(ConfigError):
            RunDir.of(tmp_path, *fields, 1e-3, 1)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root/mlm_probe").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="outside"):
        RunDir.of(tmp_path / "root", "mlm_probe", "rte", "t", "m", 1e-3, 1)


@pytest.mark.parametrize("link", ["symlink", "dangling_symlink", "hardlink"])
@pytest.mark.parametrize("name", [run_files.LOCK, "run.log"])
def test_planted_link_in_run_dir_is_refused_not_followed(tmp_path, name, link):
    """A `.lock` linked to a file elsewhere was truncated, a `run.log` link appended to (or its target created)."""
    cfg = compose([*TINY_RUN, f"run.root={tmp_path}/out"])
    directory = run_dir(cfg)
    directory.mkdir(parents=True)
    precious = tmp_path / "precious.txt"
    if link != "dangling_symlink":
        precious.write_text("keep me\n")
    (directory / name).symlink_to(precious) if link != "hardlink" else os.link(precious, directory / name)
    with pytest.raises(ConfigError, match=f"{name}: is a (symbolic|hard) link"):
        run(cfg)
    assert precious.read_text() == "keep me\n" if link != "dangling_symlink" else not precious.exists()
    assert sorted(p.name for p in directory.iterdir()) == [name]  # nothing written, a `.lock` it made removed


def test_lock_is_never_truncated_and_never_read_through_a_link(tmp_path):
    earlier = f"{'an-earlier-owner-on-a-host-with-a-long-name' * 5} 123456\n"
    (tmp_path / run_files.LOCK).write_text(earlier)
    handle = RunDir(tmp_path).lock()
    try:
        assert (tmp_path / run_files.LOCK).stat().st_size == len(earlier)  # written over in place, never emptied
        assert RunDir(tmp_path).lock_owner() == f"{platform.node()} {os.getpid()}"
    finally:
        run_files.release_lock(handle)
    secret = tmp_path / "secret"
    secret.write_text("not for sweep status\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / run_files.LOCK).symlink_to(secret)
    assert RunDir(tmp_path / "run").lock_owner() == "" and not RunDir(tmp_path / "run").lock_held()


def test_atomic_writes_never_write_through_a_planted_link(tmp_path):
    """results.json, resume.pt, trainable.safetensors and caches: the temp file is new (O_EXCL, random name) and
    the rename replaces a link at the target itself."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    for name in ("resume.pt", results.RESULTS):
        for guess in range(os.getpid() - 2, os.getpid() + 3):  # the temp names a writer could predict before
            (tmp_path / f".{name}.{guess}.tmp").symlink_to(precious)
        (tmp_path / name).symlink_to(precious)
    with results.replace_atomically(tmp_path / "resume.pt") as tmp:
        tmp.write_text("new state")
    RunDir(tmp_path).write(Record.from_json({"status": "running"}))  # the one writer of results.json
    assert precious.read_text() == "keep me\n"
    assert not (tmp_path / "resume.pt").is_symlink() and (tmp_path / "resume.pt").read_text() == "new state"
    assert not (tmp_path / results.RESULTS).is_symlink() and results.read(tmp_path) == {"status": "running"}


@contextmanager
def read_only(folder: Path):
    """`folder` read-only (mode 0o555). Root may write anywhere, so as root the same refusal is made by hand:
    creating or opening for writing anything inside `folder` fails with EACCES, as the kernel would."""
    folder.chmod(0o555)
    patches = []
    if os.geteuid() == 0:
        def inside(path) -> bool:
            return folder.resolve() in Path(os.fspath(path)).absolute().parents

        def refuse(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

        real_mkdir, real_os_open, real_open = os.mkdir, os.open, builtins.open
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

        def mkdir(path, *args, **kwargs):
            return refuse(path) if inside(path) else real_mkdir(path, *args, **kwargs)

        def os_open(path, flags, *args, **kwargs):
            return refuse(path) if flags & writes and inside(path) else real_os_open(path, flags, *args, **kwargs)

        def py_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and inside(file):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        patches = [(os, "mkdir", mkdir), (os, "open", os_open), (builtins, "open", py_open), (io, "open", py_open)]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, fake in patches:
        setattr(module, name, fake)
    try:
        yield
    finally:
        for module, name, real in saved:
            setattr(module, name, real)
        folder.chmod(0o755)


@pytest.mark.parametrize("run_dir_exists", [False, True], ids=["new_run_dir", "existing_run_dir"])
def test_read_only_experiment_folder_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, run_dir_exists):
    out = tmp_path / "out"
    experiment = out / "default"
    directory = experiment / "rte/full_ft/tiny_bert/lr=0.001/seed=1"
    (directory if run_dir_exists else experiment).mkdir(parents=True)
    locked = directory if run_dir_exists else experiment
    if run_dir_exists:  # an earlier session's log, kept as it was
        (directory / "run.log").write_text("earlier session\n")
    monkeypatch.chdir(tmp_path)
    with read_only(locked):
        code, lines = cli(monkeypatch, capsys, *TINY_RUN, f"run.root={out}")
        with pytest.raises(ConfigError, match="cannot write there"):
            run(compose([*TINY_RUN, f"run.root={out}"]))
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {locked}: cannot write there"), lines
    assert [p.name for p in tmp_path.rglob("*") if not p.is_dir()] == (["run.log"] if run_dir_exists else [])
    assert [p.name for p in locked.iterdir()] == (["run.log"] if run_dir_exists else [])
    assert not run_dir_exists or (directory / "run.log").read_text() == "earlier session\n"
