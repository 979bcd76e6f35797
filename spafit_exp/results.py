"""Run directories, the results.json contract, atomic writes, skip-if-done, provenance, and the lock that tells
a running run from a dead one."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spafit_exp import REPO_ROOT, fingerprint
from spafit_exp.errors import ConfigError

RESULTS = "results.json"
RESUME_FILE = "resume.pt"  # the loop's resume checkpoint (checkpointer.py); named here for readers without torch
SCHEMA_VERSION = 1
_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "peft", "hydra-core", "omegaconf", "wandb",
             "scikit-learn", "scipy", "numpy", "spafit_exp")


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run.dir)


def layout_dir(root, experiment: str, task: str, method_tag: str, model: str, lr, seed) -> Path:
    """The run-directory layout of conf/config.yaml's run.dir, for records written outside a composed run
    (the studies): <root>/<experiment>/<task>/<method tag>/<model>/lr=<lr>/seed=<seed>."""
    return Path(root) / experiment / task / method_tag / model / f"lr={lr}" / f"seed={seed}"


class CorruptRecord(ValueError):
    """A results.json that is not a readable JSON object (a disk filled up, an editor, a copy cut short)."""


def read(directory: Path) -> dict | None:
    """The run's record, None if there is none; CorruptRecord (naming the file) if it cannot be read."""
    path = Path(directory) / RESULTS
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptRecord(f"{path}: unreadable record ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(record, dict):
        raise CorruptRecord(f"{path}: unreadable record (not a JSON object)")
    return record


class SkippedRecord(dict):
    """A finished run's record returned instead of running it again (skip-if-done)."""


def is_completed(directory: Path) -> bool:
    try:
        record = read(directory)
    except CorruptRecord:
        return False
    return record is not None and record.get("status") == "completed"


def set_aside(directory: Path, why: str) -> Path | None:
    """Move results.json to results.<why>-<UTC time>.json beside it (kept, never deleted); returns the new path."""
    path = Path(directory) / RESULTS
    if not path.is_file():
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    """Temp file in the same folder + rename: readers see the old record or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(obj, handle, indent=2, sort_keys=False, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(directory: Path, record: dict) -> None:
    write_json_atomic(Path(directory) / RESULTS, record)


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


# ---------------------------------------------------------------- one owner per run directory

LOCK = ".lock"
# A status probe (lock_is_held) holds a run's lock for microseconds; a job that finds it busy retries this often,
# this far apart, before it concludes that another process owns the directory.
LOCK_TRIES, LOCK_RETRY_S = 5, 0.05


def acquire_lock(directory: Path):
    """Exclusive, non-blocking `flock` on `<run dir>/.lock`. The kernel drops it when the owner exits, even on
    SIGKILL, so a lock is never stale. Returns the open handle (keep it), or None if another process holds it."""
    import fcntl

    path = Path(directory) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    for attempt in range(LOCK_TRIES):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == LOCK_TRIES - 1:
                handle.close()
                return None
            time.sleep(LOCK_RETRY_S)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{platform.node()} {os.getpid()}\n")
    handle.flush()
    return handle


def lock_is_held(directory: Path) -> bool:
    """Whether a live process owns the run directory, from its `.lock` alone: a shared non-blocking `flock` on a
    read-only handle fails only while an owner holds it (the kernel, or NFS's lock manager, drops a dead owner's
    lock), so no process table is read and it works for runs on other nodes. Never creates the file."""
    import fcntl

    try:
        fd = os.open(Path(directory) / LOCK, os.O_RDONLY)
    except OSError:  # no lock file: nobody ever ran here, or the directory is gone
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def lock_owner(directory: Path) -> str:
    """`<host> <pid>` as the last owner wrote it into `.lock` (shown by `sweep status`; informative only)."""
    try:
        return (Path(directory) / LOCK).read_text().strip()
    except OSError:
        return ""


def release_lock(handle) -> None:
    """Unlock without deleting the file: unlinking a lock file races with processes that already opened it."""
    import fcntl

    if handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def write_bench(out: str | Path, name: str, meta: dict, rows: list[dict], markdown: str) -> None:
    """A benchmark's outputs: `<out>/<name>.json` ({meta, rows}) and `<out>/<name>.md`, also printed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
