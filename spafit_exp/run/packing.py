"""Packing a sweep onto one machine (`launcher=local`, docs/sweeps.md): how many jobs run side by side and how
many torch threads each one gets.

    hydra.launcher.n_jobs=auto (default)  one job per core, but no more jobs than the sweep has
    hydra.launcher.n_jobs=K               K jobs at a time
    launcher.threads=auto (default)       the cores shared out among the jobs running at once (at least 1 each)
    launcher.threads=T                    T threads per job

Small models gain more from several single-threaded jobs than from one job on many threads (their ops are too
small to split well), so a sweep larger than the machine runs one job per core, one thread each; a sweep smaller
than the machine gives each job several threads. Torch is imported only to set a job's threads."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from spafit_exp.core.errors import ConfigError

AUTO = "auto"
N_JOBS_KEY = "hydra.launcher.n_jobs"
THREADS_KEY = "launcher.threads"
# Read by OpenMP / MKL / OpenBLAS when torch first starts its thread pools; loky workers inherit them.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CORES_RESOLVER = "spafit.cores"


def cores() -> int:
    """CPUs this process may use: the least of its affinity mask (os.sched_getaffinity), a container's CPU quota
    (cgroups) and os.cpu_count — joblib's count, the one its loky workers are sized by."""
    from joblib import cpu_count

    return max(1, int(cpu_count()))


def register() -> None:
    """`${spafit.cores:}` (conf/launcher/local.yaml's n_jobs) for configs composed outside `python -m spafit_exp`,
    which replaces it with the number it chose. Idempotent; called where the config schemas are registered."""
    if not OmegaConf.has_resolver(CORES_RESOLVER):
        OmegaConf.register_new_resolver(CORES_RESOLVER, cores)


def parse(key: str, value) -> str | int:
    """`auto` or a positive integer; anything else (0, -1, 1.5, abc, a comma list) is one line naming `key`."""
    text = str(value).strip()
    if text == AUTO:
        return AUTO
    if text.isdigit() and int(text) >= 1:
        return int(text)
    what = "jobs side by side" if key == N_JOBS_KEY else "torch threads per job"
    raise ConfigError(f"{key}={value}: must be {AUTO} or a positive integer ({what}, launcher=local)")


def choose(jobs: int, cpus: int, n_jobs: str | int = AUTO, threads: str | int = AUTO) -> tuple[int, int]:
    """(jobs at a time, torch threads per job) for a sweep of `jobs` runs on `cpus` cores."""
    at_once = min(cpus if n_jobs == AUTO else int(n_jobs), max(jobs, 1))
    per_job = max(1, cpus // at_once) if threads == AUTO else int(threads)
    return at_once, per_job


def job_threads(threads, n_jobs) -> int:
    """In a job: `launcher.threads`, or for auto the launching process's choice, from the jobs at a time it chose
    (`n_jobs`: at most the sweep's job count, so `choose` gives the same number here)."""
    n_jobs = int(n_jobs)
    return choose(n_jobs, cores(), n_jobs, parse(THREADS_KEY, threads))[1]


def overrides_of(argv: list[str]) -> dict[str, str]:
    """The last value the command line gives each of the two keys (absent keys left out)."""
    found = {}
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key in (N_JOBS_KEY, THREADS_KEY):
            found[key] = value
    return found


def with_n_jobs(argv: list[str], n_jobs: int) -> list[str]:
    """`argv` with hydra.launcher.n_jobs replaced by the number chosen. The threads are not passed on: each job
    derives them from that number with the same rule (`job_threads`), so the overrides a run keeps in its record
    (and the commands it prints repeat) hold only what the user gave."""
    keep = [a for a in argv if a.lstrip("+").partition("=")[0] != N_JOBS_KEY]
    return [*keep, f"{N_JOBS_KEY}={n_jobs}"]


def apply_threads(threads: int) -> None:
    """This process's torch threads, before its first run: the variables first, which OpenMP / MKL read as torch
    starts its pools (and loky workers started later inherit), then torch's own count, which torch caps at the
    CPU count when it comes from the variables only."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
