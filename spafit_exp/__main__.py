"""Entry point: `python -m spafit_exp [overrides]` or `spafit-exp [overrides]`.

Exit codes: 0 done (or skipped), 1 a run or a sweep job failed, 2 bad input (one line, nothing written),
128 + signal number when SIGINT / SIGTERM stopped a run (130 / 143; its checkpoint is kept)."""

import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from spafit_exp import CONF_DIR
from spafit_exp.core.errors import ConfigError, RecipeMismatch, RunInterrupted
from spafit_exp.core.record import SkippedRecord
from spafit_exp.core.results import WriteFailed, remove_empty_dirs, require_writable_root
from spafit_exp.core.run_dir import RunDir
from spafit_exp.core.timing import phase_totals
from spafit_exp.engine.stops import hand_back
from spafit_exp.run import packing
from spafit_exp.run.config import check_group_overrides, check_overrides_compose, check_run_dir, job_overrides, quote_path_values

# Jobs of an in-process sweep (basic launcher): (run directory, outcome, seconds, main metric or message[, the
# record's timing: completed jobs]).
SWEEP: list[tuple] = []


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    # launcher=local: its jobs report through their records (the launching process reads them back), so no job
    # raises or exits; and each job's threads are set before torch starts its pools (validate loads torch).
    local = hydra_cfg.mode == RunMode.MULTIRUN and OmegaConf.select(cfg, packing.THREADS_KEY) is not None
    if local:
        packing.apply_threads(packing.job_threads(cfg.launcher.threads, hydra_cfg.launcher.n_jobs))
    from spafit_exp.run.validation import validate  # lighter than the whole app: bad input fails in seconds

    try:
        validate(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        remove_empty_dirs(Path(cfg.run.dir), Path(cfg.run.root))  # Hydra's eager mkdir of the run directory
        if local:
            return
        sys.exit(2)
    from spafit_exp.run.app import run  # the loop, the models and their libraries: only for a run that is good

    cfg.run.overrides = job_overrides(hydra_cfg, cfg)  # the run's record keeps them: the commands it prints repeat them

    in_process_sweep = hydra_cfg.mode == RunMode.MULTIRUN and "BasicLauncher" in hydra_cfg.launcher._target_
    started = time.time()
    try:
        record = run(cfg)
    except RunInterrupted as err:
        print(str(err), file=sys.stderr)
        if local:  # this job's record says interrupted; the others go on
            return
        hand_back(err.signum)  # preempted under submitit: it requeues the job, which resumes from the checkpoint
        sys.exit(128 + err.signum)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        if local:
            return
        if not (isinstance(err, RecipeMismatch) and hydra_cfg.mode == RunMode.MULTIRUN):
            sys.exit(2)
        if not in_process_sweep:
            raise JobRefused(str(err)) from None  # this job only: the sweep goes on, its exit code reports it
        SWEEP.append((cfg.run.dir, "refused", time.time() - started, "different recipe"))
        return
    except Exception as err:  # noqa: BLE001 - recorded in results.json and logged; the sweep goes on
        if isinstance(err, WriteFailed) and hydra_cfg.mode == RunMode.RUN:  # a full disk: one line naming the file
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        if local:  # results.json says failed where the run got that far; this line, where it did not
            print(f"failed: {cfg.run.dir}: {type(err).__name__}: {err}", file=sys.stderr)
            return
        if not in_process_sweep:
            raise
        SWEEP.append((cfg.run.dir, "failed", time.time() - started, f"{type(err).__name__}: {err}"[:80]))
        return
    if in_process_sweep:
        SWEEP.append((cfg.run.dir, *_outcome(record, started)))


def _outcome(record: dict | None, started: float) -> tuple[str, float, str, dict | None]:
    if record is None:
        return "skipped", time.time() - started, "run by another process", None
    status = "skipped" if isinstance(record, SkippedRecord) else "completed"
    seconds = time.time() - started
    main = record.get("main_metric")
    score = ((record.get("metrics") or {}).get("best") or {}).get("dev", {}).get(main)
    timing = record.get("timing") if status == "completed" else None  # a skipped run's time was spent before
    return status, seconds, f"{main}={score:.4f}" if isinstance(score, float) else "", timing


class JobRefused(RuntimeError):
    """A sweep job refused with a one-line ConfigError (e.g. its directory holds another recipe)."""


def sweep_summary(jobs: list[tuple]) -> str:
    """Counts, one line per job, then where the completed jobs' time went. A job is (run directory, outcome,
    seconds, detail) with its record's `timing` as an optional fifth item (a launcher may read it from disk)."""
    counts = {k: sum(1 for j in jobs if j[1] == k) for k in ("completed", "skipped", "failed", "refused")}
    lines = [f"sweep: {len(jobs)} jobs — " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    width = max(len(j[0]) for j in jobs)
    lines += [f"  {status:<9} {seconds:7.1f}s  {directory:<{width}}  {detail}" for directory, status, seconds, detail,
              *_ in jobs]
    phases = phase_totals([j[4] for j in jobs if len(j) > 4 and j[1] == "completed"])
    return "\n".join(lines + ([phases] if phases else []))


def main() -> None:
    sys.argv[1:] = args = quote_path_values(sys.argv[1:])
    local = None  # launcher=local: the sweep's jobs and their directories' states before the launch
    try:
        check_group_overrides(sys.argv[1:], CONF_DIR)
        first = check_overrides_compose(sys.argv[1:])
        require_writable_root(first.run.root)  # before Hydra creates the run directory there
        check_run_dir(first, writable=True)  # a folder name leading out of run.root, a read-only experiment folder
        if {"-m", "--multirun"} & set(sys.argv[1:]):
            from spafit_exp.run.validation import check_swept_paths
            from spafit_exp.sweep import local as local_sweep

            check_swept_paths(sys.argv[1:])
            if local_sweep.is_local(first):
                sys.argv[1:], local = local_sweep.prepare(args, first)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if local is not None:
        print(local_sweep.describe(local), flush=True)
        packing.apply_threads(local.threads)  # inherited by the workers (and used here when n_jobs is 1)
    interrupted = False
    try:
        _hydra_main()
    except KeyboardInterrupt:  # launcher=local: Ctrl-C reached the workers too; joblib stopped them and the queue
        if local is None:
            raise
        interrupted = True
    jobs = SWEEP if local is None else local_sweep.outcomes(local)
    if jobs:
        from spafit_exp.sweep.lr_search import edge_commands  # the table code (report/cells): sweeps only

        print(sweep_summary(jobs))
        for root in sorted({RunDir(directory).experiment_root for directory, *_ in jobs}):
            for line in edge_commands(root, args):
                print(line)
    if interrupted:
        print("interrupted: rerun the same command to resume (completed runs are skipped; interrupted and crashed "
              "ones resume from their last checkpoint)", file=sys.stderr)
        sys.exit(130)
    if any(status in ("failed", "refused") for _, status, *_ in jobs):
        sys.exit(1)


if __name__ == "__main__":
    main()
