"""Reproduce a paper's main table in one command: run it, print the paper's published numbers beside ours, and
check the paper's claims (docs/reproductions.md).

    python -m spafit_exp.repro PAPER [--scale tiny|cpu|paper] [--plan] [--report] [--out DIR] [overrides...]

PAPER: spafit (SPAFIT Table 2), stoc (Stochastic Tuning Table 1), subset (subset paper Table 1).
--scale cpu (default): the embedded model on a 2-core machine; tiny: tiny_bert and a few dozen rows (tests);
paper: the paper's recipe, launched through the sweep machinery (launcher=slurm unless a launcher= is given).
--plan: the runs, what is done, the compute left and what data and weights they need; runs nothing.
--report: rebuild <out>/<paper>/report.md from the records alone. A rerun continues from the records.
overrides: `key=value` for every run (e.g. data.dir=/glue_data, model.path=/ckpt, hydra.launcher.partition=gpu).

Exit codes: 0; 1 when a run failed or was refused; 2 bad input (one line); 130 / 143 when stopped."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from spafit_exp.core.errors import ConfigError, RunInterrupted
from spafit_exp.repro import claims, collect, plan, report, runner
from spafit_exp.repro.papers import paper as find_paper
from spafit_exp.repro.recipe import SCALES, layout, scale_of
from spafit_exp.sweep import estimates

DEFAULT_OUT = "outputs/repro"
CPU_TFLOPS = 0.2  # README's SPAFIT run on RTE: 6 x 22.7M parameters x ~70 tokens x 32 rows/s ~ 0.3 TFLOP/s


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m spafit_exp.repro", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paper", nargs="?", help="spafit, stoc or subset")
    parser.add_argument("--scale", default="cpu", help=f"{' | '.join(SCALES)} (default: cpu)")
    parser.add_argument("--plan", action="store_true", help="print what would run; run nothing")
    parser.add_argument("--report", action="store_true", help="rebuild the report from the records only")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"reports (and tiny/cpu runs) go under OUT/<paper> "
                        f"(default: {DEFAULT_OUT})")
    parser.add_argument("--tflops", type=float, default=None, help="assumed sustained TFLOP/s for --plan's estimates "
                        "of runs without a finished run of their model x method (default: 0.2 at the tiny and cpu "
                        "scales, about what the loop reaches on 2 CPU cores; 20 at the paper scale, one GPU)")
    args, extra = parser.parse_known_args(argv)
    unknown = [word for word in extra if "=" not in word or word.startswith("-")]
    if unknown:
        raise ConfigError(f"{' '.join(unknown)}: not an option or a key=value override (see --help)")
    args.overrides = extra
    return args


def build_report(paper, scale_name: str, scale, where, overrides: list[str], command: str) -> Path:
    rows = scale.rows if scale else paper.paper_rows
    tags, model = plan.row_tags(paper, scale, rows, where, overrides)
    tasks = scale.tasks if scale else _paper_tasks(paper, overrides)
    runs, cells = collect.gather(paper, rows, tags, tasks, where.runs, screen=scale is not None, model=model)
    verdicts = claims.check(collect.evidence(rows, cells), paper.claims)
    return report.write(paper, scale_name, scale, where, runs, cells, verdicts, runner.read_sessions(where),
                        collect.machines(runs), command, overrides)


def _paper_tasks(paper, overrides: list[str]) -> tuple[str, ...]:
    """The paper's table columns (its layout); a `task=` override narrows them, as it narrows the sweep."""
    from spafit_exp.report.layouts import layout_of

    tasks = tuple(column.task for column in layout_of(paper.preset).columns)
    given = [o.split("=", 1)[1].split(",") for o in overrides if o.startswith("task=")]
    return tuple(t for t in tasks if t in given[-1]) if given else tasks


def launch(paper, overrides: list[str]) -> int:
    """Scale paper: each of the paper's sweeps through `python -m spafit_exp -m` (Slurm job arrays by default)."""
    launcher = [] if any(o.startswith("launcher=") for o in overrides) else ["launcher=slurm"]
    code = 0
    for args in plan.paper_sweeps(paper, overrides):
        command = [sys.executable, "-m", "spafit_exp", "-m", *args, *launcher]
        print(f"launch: {shlex.join(command[1:])}", flush=True)
        code = max(code, subprocess.run(command).returncode)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "spafit_exp.repro", *argv])
    try:
        args = parse(argv)
        if args.paper is None:
            raise ConfigError("give a paper: spafit, stoc or subset (python -m spafit_exp.repro --help)")
        paper = find_paper(args.paper)
        scale = scale_of(paper, args.scale)
        where = layout(paper, args.scale, Path(args.out), args.overrides)
        if args.plan:
            args.tflops = args.tflops or (CPU_TFLOPS if scale is not None else estimates.DEFAULT_TFLOPS)
            print(plan.paper_report(paper, args.overrides, args.tflops) if scale is None
                  else plan.scaled_report(paper, scale, where, args.overrides, args.tflops))
            return 0
        code = 0
        if not args.report:
            if scale is None:
                code = 1 if launch(paper, args.overrides) else 0
            else:
                session = runner.execute(paper, scale, where, args.overrides, command)
                code = 1 if session.failed else 0
        path = build_report(paper, args.scale, scale, where, args.overrides, command)
        print(f"report: {path}")
        return code
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunInterrupted as err:  # a run checkpointed and stopped: rerun to continue
        print(str(err), file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:  # Ctrl-C between runs: nothing half-done
        print("interrupted: rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
