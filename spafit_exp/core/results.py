"""Run directories, the results.json contract, atomic writes, skip-if-done, provenance, and the lock that tells
a running run from a dead one."""

from __future__ import annotations

import json
import os
import platform
import secrets
import stat
import subprocess
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spafit_exp import REPO_ROOT
from spafit_exp.core import fingerprint, record_check
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.run_files import (  # noqa: F401 - the run directory's lock and write error, also named here
    LOCK,
    WriteFailed,
    acquire_lock,
    lock_is_held,
    lock_owner,
    read_plain,
    release_lock,
    write_failed,
)
from spafit_exp.core.safe_paths import check_component, is_within

RESULTS = "results.json"
RESUME_FILE = "resume.pt"  # the loop's resume checkpoint (checkpointer.py); named here for readers without torch
SCHEMA_VERSION = 1
_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "peft", "hydra-core", "omegaconf", "wandb",
             "scikit-learn", "scipy", "numpy", "spafit_exp")


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run.dir)


PATH_KEYS = ("experiment_name", "task.name", "method.tag", "model.name")  # the folders of a run directory


def check_run_dir(cfg: DictConfig, writable: bool) -> None:
    """ConfigError (one line) unless each value naming a folder of run.dir is one safe folder name, run.dir
    resolves inside run.root (no `..`, no planted symbolic link leads out) and, if `writable`, the folder it is
    to be created in can be written (a read-only experiment folder is named before anything is created)."""
    for key in PATH_KEYS:
        check_component(key, OmegaConf.select(cfg, key))
    directory, root = Path(cfg.run.dir), Path(cfg.run.root)
    if not is_within(directory, root):
        raise ConfigError(f"run.dir={directory}: resolves outside run.root={root} (a symbolic link?); a run "
                          "writes only inside run.root")
    problem = check_writable(directory) if writable else None
    if problem:
        absolute = directory.expanduser().absolute()
        folder = next(p for p in [absolute, *absolute.parents] if p.exists())
        raise ConfigError(f"{folder}: cannot write there ({problem}), so the run directory "
                          f"{directory} cannot be written; make it writable or choose another run.root")


def layout_dir(root, experiment: str, task: str, method_tag: str, model: str, lr, seed) -> Path:
    """The run-directory layout of conf/config.yaml's run.dir, for records written outside a composed run
    (the studies): <root>/<experiment>/<task>/<method tag>/<model>/lr=<lr>/seed=<seed>. The values may come from
    other runs' records, so each must be one folder name and the result lie inside `root` (else ConfigError)."""
    names = {"experiment": experiment, "task": task, "method_tag": method_tag, "model": model, "lr": f"lr={lr}",
             "seed": f"seed={seed}"}
    directory = Path(root).joinpath(*(check_component(key, value) for key, value in names.items()))
    if not is_within(directory, Path(root)):
        raise ConfigError(f"{directory}: resolves outside {root} (a symbolic link?)")
    return directory


class CorruptRecord(ValueError):
    """A results.json that is not a readable JSON object (a disk filled up, an editor, a copy cut short)."""


def read(directory: Path) -> dict | None:
    """The run's record, None if there is none; CorruptRecord (naming the file) if it cannot be read, is no plain
    file (a FIFO, a link) or is malformed (a field of the wrong type, record_check)."""
    path = Path(directory) / RESULTS
    try:
        raw = read_plain(path)
        if raw is None:
            return None
        record = json.loads(raw.decode())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        raise CorruptRecord(f"{path}: unreadable record ({type(err).__name__}: {why})") from None
    if not isinstance(record, dict):
        raise CorruptRecord(f"{path}: unreadable record (not a JSON object)")
    malformed = record_check.problem(record)
    if malformed:
        raise CorruptRecord(f"{path}: malformed record ({malformed})")
    return record


class SkippedRecord(dict):
    """A finished run's record returned instead of running it again (skip-if-done)."""


def earlier_sessions_s(directory: Path) -> float:
    """Wall time already spent on a run being resumed (its interrupted or failed record's total)."""
    try:
        timing = (read(directory) or {}).get("timing") or {}
    except CorruptRecord:
        return 0.0
    return float(timing.get("wall_s", timing.get("earlier_sessions_s", 0.0)))


def is_completed(directory: Path) -> bool:
    try:
        record = read(directory)
    except CorruptRecord:
        return False
    return record is not None and record.get("status") == "completed"


def set_aside(directory: Path, why: str) -> Path | None:
    """Move results.json to results.<why>-<UTC time>.json beside it (kept, never deleted); returns the new path."""
    path = Path(directory) / RESULTS
    if not os.path.lexists(path):  # a FIFO or a link planted as the record is moved aside too (never followed)
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"results.{why}-{stamp}.json")
    n = 1
    while target.exists():
        target = path.with_name(f"results.{why}-{stamp}-{n}.json")
        n += 1
    os.replace(path, target)
    return target


@contextmanager
def replace_atomically(path: Path):
    """Yield a temp path beside `path` (one per process) to write to; it is renamed onto `path` when the block
    succeeds and removed when it fails, so readers see the old file or the new one, never half of one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh random name created with O_EXCL (a predictable one could be planted as a link for the writer to
        # follow); mode 0o666 less the umask, as for any file the run writes, so colleagues can read the result.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        mode = stat.S_IMODE(os.fstat(fd).st_mode)  # 0o666 less the umask, read back: os.umask cannot be read safely
        os.close(fd)
    except OSError as err:
        raise write_failed(path, err) from None
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)  # some writers (safetensors) put a 0600 file of their own
        try:  # in the temp's place: it gets the temp's mode back (fchmod: never through a link swapped in)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)  # replaces a link planted at `path` itself, never writes through it
    except BaseException as err:
        failed = write_failed(path, err) if isinstance(err, Exception) else None  # before the temp frees its blocks
        tmp.unlink(missing_ok=True)
        if failed is not None:
            raise failed from None
        raise


def write_json_atomic(path: Path, obj) -> None:
    """Temp file in the same folder + rename: readers see the old record or the new one, never half of one."""
    with replace_atomically(path) as tmp:
        with open(tmp, "w") as handle:
            json.dump(obj, handle, indent=2, sort_keys=False, default=str)
            handle.flush()
            os.fsync(handle.fileno())


def write(directory: Path, record: dict) -> None:
    write_json_atomic(Path(directory) / RESULTS, record)


def write_if_possible(directory: Path, record: dict) -> None:
    """Write a failed or interrupted run's record unless the disk refuses it too (still full): then the record
    stays as last written (`running`: sweep status calls it crashed) and the caller raises the run's own error."""
    try:
        write(directory, record)
    except WriteFailed:
        pass


def require_writable_root(root) -> None:
    """ConfigError naming run.root when it cannot hold run directories (the CLI checks it before Hydra creates
    anything there, validation for library callers)."""
    problem = check_writable(root)
    if problem:
        raise ConfigError(f"run.root={root}: cannot write there ({problem}); choose a writable folder")


def check_writable(root) -> str | None:
    """Why `root` cannot hold run directories (None if it can): probe with a temp folder in its first existing
    ancestor, removed at once."""
    root = Path(root).expanduser().absolute()
    ancestor = next(p for p in [root, *root.parents] if p.exists())
    try:
        if not ancestor.is_dir():
            raise NotADirectoryError(f"{ancestor} is not a directory")
        os.rmdir(tempfile.mkdtemp(prefix=".spafit-probe-", dir=ancestor))
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"
    return None


def remove_empty_dirs(directory: Path, stop_at: Path) -> None:
    """Undo Hydra's eager mkdir of a run dir when a run ends before writing anything."""
    directory, stop_at = Path(directory).resolve(), Path(stop_at).resolve()
    while directory != stop_at and stop_at in directory.parents and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_name() -> str:
    """The CPU model (benchmarks and records compare only numbers measured on the same one)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")  # what decides CPU matmul speed


def cpu_features() -> list[str]:
    """Of ISA_FLAGS, those the CPU reports (Linux); bf16 matmuls are several times faster with AMX."""
    try:
        flags = next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [f for f in ISA_FLAGS if f in flags]


def cpu_summary() -> str:
    """What every benchmark prints about the machine: model, ISA features, cores."""
    return f"{cpu_name()} [{' '.join(cpu_features()) or 'no ISA flags read'}], {os.cpu_count()} CPUs"


def provenance() -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"git_sha": git_sha(), "versions": versions, "python": platform.python_version(), "host": platform.node(),
            "cpu": cpu_name(), "isa": cpu_features(), "cpus": os.cpu_count()}


def base_record(cfg: DictConfig) -> dict:
    """Identity fields every record carries: what `make tables` groups and filters by."""
    return {
        "schema": SCHEMA_VERSION,
        "status": "running",
        "experiment": cfg.experiment_name,
        "task": cfg.task.name,
        "method": cfg.method.name,
        "method_tag": cfg.method.tag,
        "selector": cfg.selector.name,
        "model": cfg.model.name,
        "lr": cfg.trainer.lr,
        "seed": cfg.trainer.seed,
        "main_metric": cfg.task.main_metric,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "fingerprint": fingerprint.of(cfg),
        "provenance": provenance(),
    }


def write_bench(out: str | Path, name: str, meta: dict, rows: list[dict], markdown: str) -> None:
    """A benchmark's outputs: `<out>/<name>.json` ({meta, rows}) and `<out>/<name>.md`, also printed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
