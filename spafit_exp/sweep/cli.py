"""Sweeps at paper scale, before and while they run (docs/sweeps.md):

  python -m spafit_exp.sweep plan -m experiment=stoc_table1 [overrides]
      The runs `python -m spafit_exp -m <same overrides>` would launch, expanded by Hydra's own sweeper in
      seconds without loading any model (`runs=<N>`); how many are already completed / failed / interrupted /
      crashed / running / corrupt / refused / to do, per task × method; the compute time of the rest; the model
      weights and data files the runs read, and whether they are here; and the command(s) that launch exactly
      the rest (with launcher=slurm: one job array each).

  python -m spafit_exp.sweep status [experiment] [overrides] [--watch SECONDS]
      The same counts from the records under run.root while the sweep runs (locks tell running from crashed),
      failed runs grouped by error, running runs with their lock's owner, the slowest runs, finished and remaining
      compute. `experiment` names a preset (its sweep says which runs should exist) or a folder under run.root
      (one that does not exist is refused: exit 2); without one, one line per experiment folder.

Exit codes: 0, or 2 for bad input (one line naming the key)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from spafit_exp import CONF_DIR
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.record import CorruptRecord, Record
from spafit_exp.core.run_dir import RELAUNCH, STATES, RunDir, RunState, run_dirs
from spafit_exp.sweep import estimates
from spafit_exp.sweep import overview as sweep_report
from spafit_exp.sweep.plan import MULTIRUN_FLAGS, Plan, expand


def plan_states(plan: Plan) -> list[RunState]:
    """Each job's state; a job with run.force=true replaces whatever its directory holds, so it is still to do."""
    return [RunDir(job.run_dir).state(job.recipe, force=job.force) for job in plan.jobs]


def records_under(root: Path, known: list[RunState] = ()) -> list[Record]:
    """Readable records under `root` (throughput evidence for estimates), reusing the ones already read."""
    seen = {s.directory.resolve(): s.record for s in known if s.record is not None}
    found = []
    for run_dir in run_dirs(root) if root.is_dir() else []:
        record = seen.get(run_dir.path.resolve())
        if record is None:
            try:
                record = run_dir.record()
            except CorruptRecord:
                record = None
        if record is not None:
            found.append(record)
    return found


def _sweep_line(plan: Plan) -> str:
    swept = ", ".join(f"{k} ×{len(plan.sweep_values[k])}" for k in plan.sweep_keys) or "nothing swept: one run"
    return f"sweep: python -m spafit_exp -m {' '.join(plan.args)}\nswept: {swept} → {plan.sweep_dir}/"


def plan_report(plan: Plan, tflops: float) -> str:
    states = plan_states(plan)
    seconds, basis = sweep_report.estimate(plan, states, records_under(plan.sweep_dir, states), tflops)
    relaunch = sum(s.state in RELAUNCH for s in states)
    lines = [_sweep_line(plan), f"runs={len(plan.jobs)}", sweep_report.counts(states), "",
             sweep_report.per_task_method(plan, states), ""]
    lines += sweep_report.examples(states, "refused", "hold another recipe: the sweep refuses them; use another "
                                   "experiment_name, or run.force=true to replace them")
    lines += sweep_report.examples(states, "running", "not relaunched")
    lines.append(f"estimate: {sweep_report.plural(relaunch, 'run')} to launch ≈ {estimates.hours(seconds)} of compute"
                 + (f" ({basis})" if basis else ""))
    return "\n".join(lines + sweep_report.needs(plan) + sweep_report.commands(plan, states))


def status_report(plan: Plan | None, folder: Path, tflops: float) -> tuple[str, bool]:
    """(text, whether anything can still change without a relaunch: runs running or never started)."""
    if plan is not None:
        states = plan_states(plan)
        planned = {s.directory.resolve() for s in states}
        outside = [d for d in (run_dirs(folder) if folder.is_dir() else []) if d.path.resolve() not in planned]
    else:
        states, outside = [d.state() for d in (run_dirs(folder) if folder.is_dir() else [])], []
    records = records_under(folder, states)
    lines = [f"status: {folder}/ — from records and locks only", f"runs={len(states)}",
             sweep_report.counts(states, todo_known=plan is not None)]
    if outside:
        lines.append(f"also under {folder}/, outside this sweep: {len(outside)} run directories")
    if plan is None:
        lines.append("(which runs should exist is unknown: give the sweep's preset or overrides to count `todo`)")
    for state, why in [("running", "lock owner: host pid"), ("crashed", "rerun resumes from resume.pt"),
                       ("interrupted", "rerun resumes from resume.pt"), ("corrupt", "rerun sets it aside, redoes it"),
                       ("refused", "another recipe")]:
        lines += sweep_report.examples(states, state, why)
    lines += sweep_report.failed_by_error(states) + sweep_report.slowest(states)
    if plan is not None:
        seconds, basis = sweep_report.estimate(plan, states, records, tflops, running=True)
        lines += sweep_report.progress(states, seconds, basis)
        lines += sweep_report.commands(plan, states)
    busy = any(s.state in ("running", "todo") for s in states) if plan is not None else \
        any(s.state == "running" for s in states)
    return "\n".join(lines), busy


def _overview(root: Path) -> str:
    """One line per experiment folder under run.root (no sweep given: todo unknown)."""
    lines = [f"status: {root}/ — from records and locks only ({', '.join(STATES[:-1])})"]
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []:
        states = [d.state() for d in run_dirs(folder)]
        if states:
            lines.append(f"{folder.name:>20}  runs={len(states)} {sweep_report.counts(states, todo_known=False)}")
    return "\n".join(lines) if len(lines) > 1 else f"no run directories under {root}/"


def _status_target(words: list[str], root: str | None) -> tuple[Plan | None, Path]:
    """`status stoc_table1 [overrides]`: a preset (its sweep, with the overrides, says which runs should exist), or
    an experiment folder under run.root (with overrides: the sweep they describe, in that folder; without: only
    what is on disk)."""
    names = [w for w in words if "=" not in w and not w.startswith("~")]
    overrides = [w for w in words if w not in names]
    if len(names) > 1:
        raise ConfigError(f"status {' '.join(names)}: give one experiment (a preset or a folder under run.root)")
    name = names[0] if names else None
    preset = name is not None and (CONF_DIR / "experiment" / f"{name}.yaml").is_file()
    if not preset and not overrides:
        folder = Path(root or "outputs") / (name or "")
        if not folder.is_dir():  # a typo, not an experiment with no runs yet: `runs=0` would hide it
            presets = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
            raise ConfigError(f"status {name}: no folder {folder}/ and no preset of that name (presets: "
                              f"{', '.join(presets)}; or give the sweep's overrides)")
        return None, folder
    if root is not None:
        overrides.append(f"run.root={root}")
    if name is not None:
        overrides.insert(0, f"experiment={name}" if preset else f"experiment_name={name}")
    plan = expand(overrides)
    return plan, plan.sweep_dir


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [a for a in argv if a not in MULTIRUN_FLAGS]  # plan always expands the sweep (-m is implied)
    parser = argparse.ArgumentParser(prog="python -m spafit_exp.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    plan_cmd = commands.add_parser("plan", help="expand a sweep; count what is done; the command for the rest")
    plan_cmd.add_argument("overrides", nargs="*", help="the sweep's overrides, as for python -m spafit_exp -m")
    status_cmd = commands.add_parser("status", help="counts, failures and estimates from the records")
    status_cmd.add_argument("words", nargs="*", metavar="experiment|override", help="a preset or folder name, "
                            "and the sweep's overrides")
    status_cmd.add_argument("--root", default=None, help="run.root (default: the config's, outputs)")
    status_cmd.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                            help="refresh every SECONDS until nothing runs or waits to start (Ctrl-C stops)")
    for command in (plan_cmd, status_cmd):
        command.add_argument("--tflops", type=float, default=estimates.DEFAULT_TFLOPS,
                             help="assumed sustained TFLOP/s for runs without a finished run of their model × method")
    args, extra = parser.parse_known_args(argv)  # overrides may follow options: `status x --root r y=1`
    unknown = [word for word in extra if "=" not in word and not word.startswith("~")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    getattr(args, "overrides", getattr(args, "words", [])).extend(extra)
    try:
        if args.command == "plan":
            print(plan_report(expand(args.overrides), args.tflops))
            return 0
        if not args.words:
            print(_overview(Path(args.root or "outputs")))
            return 0
        plan, folder = _status_target(args.words, args.root)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        while True:
            text, busy = status_report(plan, folder, args.tflops)
            print(text, flush=True)
            if args.watch is None or not busy:
                return 0
            time.sleep(args.watch)
            print(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
