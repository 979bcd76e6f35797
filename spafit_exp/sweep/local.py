"""`launcher=local` seen from the launching process. The jobs run in loky worker processes (hydra-joblib-launcher),
so nothing they return reaches this process; before the launch the sweep is expanded (`sweep_plan.expand`, the
jobs and their run directories) and each directory's state noted, and after it the summary is read back from the
records on disk — the same table, edge lines and exit code as an in-process (basic-launcher) sweep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spafit_exp.core.record import Record
from spafit_exp.core.run_dir import RunDir, RunState
from spafit_exp.run import packing
from spafit_exp.sweep.cli import plan_states
from spafit_exp.sweep.plan import Plan, expand

# After the sweep, a job whose directory is in one of these states did not finish: the summary says failed, why.
UNFINISHED = {"interrupted": "interrupted (resume.pt kept: rerun to resume)",
              "crashed": "crashed: its process died mid-run (killed? out of memory?); a rerun resumes it",
              "todo": "no record: not started, or stopped before its run did (its error is printed above)"}


@dataclass
class LocalSweep:
    plan: Plan
    before: list[RunState]  # each job's directory before the launch (what it will skip or refuse)
    n_jobs: int
    threads: int
    writes_records: bool = True  # False for dry runs and studies: no run record to read back, no summary


def is_local(first: DictConfig) -> bool:
    """conf/launcher/local.yaml is the one launcher config that adds `launcher.threads`."""
    return OmegaConf.select(first, packing.THREADS_KEY) is not None


def prepare(argv: list[str], first: DictConfig) -> tuple[list[str], LocalSweep]:
    """The command line with n_jobs resolved, and what the summary needs. Bad input raises ConfigError naming the
    key, before anything is written."""
    given = packing.overrides_of(argv)
    n_jobs = packing.parse(packing.N_JOBS_KEY, given.get(packing.N_JOBS_KEY, packing.AUTO))
    threads = packing.parse(packing.THREADS_KEY, given.get(packing.THREADS_KEY, first.launcher.threads))
    plan = expand([a for a in argv if a.lstrip("+").partition("=")[0] != packing.N_JOBS_KEY])
    before = plan_states(plan)  # run.force=true: a completed or refused directory is replaced, so still to do
    at_once, per_job = packing.choose(len(plan.jobs), packing.cores(), n_jobs, threads)
    records = not first.trainer.dry_run and first.study.name == "none"
    return packing.with_n_jobs(argv, at_once), LocalSweep(plan, before, at_once, per_job, records)


def describe(sweep: LocalSweep) -> str:
    return (f"launcher=local: {len(sweep.plan.jobs)} jobs, {sweep.n_jobs} at a time × {sweep.threads} torch "
            f"thread{'s' if sweep.threads > 1 else ''} each ({packing.cores()} CPUs)")


def _score(record: Record | None) -> str:
    if record is None:
        return ""
    score = record.scores("dev").get(record.main_metric)
    return f"{record.main_metric}={score:.4f}" if isinstance(score, float) else ""


def _seconds(record: Record | None) -> float:
    """This session's wall time (a resumed run's record adds up its earlier sessions)."""
    if record is None:
        return 0.0
    return (record.seconds("wall_s") or 0.0) - (record.seconds("earlier_sessions_s") or 0.0)


def outcome(before: RunState, recipe: str | None) -> tuple:
    """(run directory, status, seconds, detail[, the record's timing: completed jobs]) of one job, as the basic
    launcher's summary lists it."""
    directory = str(before.directory)
    if before.state == "completed":
        return directory, "skipped", 0.0, _score(before.record)
    if before.state == "running":
        return directory, "skipped", 0.0, "run by another process"
    if before.state == "refused":
        return directory, "refused", 0.0, "different recipe"
    after = RunDir(Path(directory)).state(recipe)
    if after.state == "completed":
        return directory, "completed", _seconds(after.record), _score(after.record), after.record.timing
    if after.state == "running":
        return directory, "skipped", 0.0, "run by another process"
    if after.state == "refused":
        return directory, "refused", 0.0, "different recipe"
    detail = after.detail if after.state in ("failed", "corrupt") else UNFINISHED[after.state]
    return directory, "failed", _seconds(after.record), detail[:80]


def outcomes(sweep: LocalSweep) -> list[tuple]:
    if not sweep.writes_records:
        return []
    return [outcome(before, job.recipe) for job, before in zip(sweep.plan.jobs, sweep.before)]
