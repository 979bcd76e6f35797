"""Atomic writes, provenance, the checks that a run directory's folders are safe and writable, and the record
of a run as plain JSON (`read`, for code that hands it on: load_run, export). The record's type is
core/record.py; the run directory — layout, lock, state, claim and the one writer of results.json — core/run_dir.py."""

from __future__ import annotations

import json
import os
import platform
import secrets
import stat
import subprocess
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from spafit_exp import REPO_ROOT
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.record import RESULTS, CorruptRecord, Record  # noqa: F401 - also named here for `read`'s callers
from spafit_exp.core.record import read as read_record
from spafit_exp.core.run_files import WriteFailed, write_failed  # noqa: F401 - WriteFailed: also named here
from spafit_exp.core.spec import RunSpec, plain

_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "peft", "hydra-core", "omegaconf", "wandb",
             "scikit-learn", "scipy", "numpy", "spafit_exp")


def read(directory: Path) -> dict | None:
    """The run's record as plain JSON (None: none yet; CorruptRecord as core/record.read), for code that hands it
    on whole (load_run, export, the studies' sources); readers of its fields use `RunDir.record()`."""
    record = read_record(directory)
    return None if record is None else record.to_json()


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


def base_record(spec: RunSpec) -> Record:
    """Identity fields every record carries: what `make tables` groups and filters by; the resolved config and its
    fingerprint as the spec holds them (a copy: a study adds to its record's)."""
    return Record(experiment=spec.experiment_name, task=spec.task.name, method=spec.method.name,
                  method_tag=spec.method.tag, selector=spec.selector_name, model=spec.model.name, lr=spec.trainer.lr,
                  seed=spec.trainer.seed, main_metric=spec.task.main_metric, config=plain(spec.config),
                  fingerprint=plain(spec.run.fingerprint), provenance=provenance())


def write_bench(out: str | Path, name: str, meta: dict, rows: list[dict], markdown: str) -> None:
    """A benchmark's outputs: `<out>/<name>.json` ({meta, rows}) and `<out>/<name>.md`, also printed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
