"""The text `sweep plan` and `sweep status` print: counts by state (overall and per task × method), failed runs
grouped by error, running runs and their lock's owner, the slowest runs, compute estimates, launch commands and
what the runs read (weights, data files). Everything comes from run states (core/run_dir.py), records and configs;
nothing is run or loaded."""

from __future__ import annotations

import importlib.util
import re
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from spafit_exp.core.record import Record
from spafit_exp.core.run_dir import RELAUNCH, STATES, RunState
from spafit_exp.core.spec import DataSpec, TaskSpec, build
from spafit_exp.inputs.readers import task_file
from spafit_exp.run.config import compose
from spafit_exp.sweep import estimates
from spafit_exp.sweep.plan import Plan, launch_commands

SHOWN = 5  # example directories / runs listed per block


def counts(states: list[RunState], todo_known: bool = True) -> str:
    """`completed=4 failed=0 ... todo=0`; todo reads `?` when no sweep says which runs should exist."""
    seen = Counter(s.state for s in states)
    return " ".join(f"{k}={seen.get(k, 0) if todo_known or k != 'todo' else '?'}" for k in STATES)


def per_task_method(plan: Plan, states: list[RunState]) -> str:
    """Runs per (task, method tag) and state; states nobody is in are left out."""
    frame = pd.DataFrame({"task": [j.task for j in plan.jobs], "method": [j.method_tag for j in plan.jobs],
                          "state": pd.Categorical([s.state for s in states], categories=STATES)})
    table = pd.crosstab([frame.task, frame.method], frame.state, dropna=False)
    keep = [c for c in table.columns if table[c].sum() or c in ("completed", "todo")]
    table = table[keep]
    table.insert(0, "runs", table.sum(axis=1))
    table.columns.name = None
    return table[table.runs > 0].to_string()


def estimate(plan: Plan, states: list[RunState], records: list[Record], tflops: float,
             running: bool = False) -> tuple[float, str]:
    """Compute time of the runs a relaunch would run (with `running`: and of the running ones, in full), with the
    basis of the estimate."""
    pairs, sizes = estimates.measure(records)
    total, basis = 0.0, Counter()
    for job, state in zip(plan.jobs, states):
        if state.state in RELAUNCH or (running and state.state == "running"):
            seconds, how = estimates.run_seconds(job, plan.models.get(job.model, {}), pairs, sizes, tflops)
            total += seconds
            basis[how] += 1
    parts = []
    if basis["measured"]:
        parts.append(f"{basis['measured']} from the throughput of finished runs of the same model × method")
    if basis["assumed"]:
        parts.append(f"{basis['assumed']} assumed: 6 × parameters × tokens at {tflops:g} TFLOP/s, at least "
                     f"{1000 * estimates.STEP_FLOOR_S_PER_LAYER:g} ms per layer per step, loading and evaluation "
                     "left out (--tflops)")
    return total, "; ".join(parts)


def commands(plan: Plan, states: list[RunState]) -> list[str]:
    remaining = [job for job, state in zip(plan.jobs, states) if state.state in RELAUNCH]
    found = launch_commands(plan, remaining)
    if not found:
        running = sum(s.state == "running" for s in states)
        return [f"nothing to launch: every run is completed{' or running' if running else ''}"
                + (" (or refused: see above)" if any(s.state == "refused" for s in states) else "")]
    how = "one sweep each; with launcher=slurm one job array each"
    failed = sum(s.state == "failed" for s in states)
    rerun = [f"({failed} of them failed before: they run again as they are; `status` groups their errors)"] \
        if failed else []
    return [f"launch the {plural(len(remaining), 'run')} still to do ({plural(len(found), 'command')}, {how}):",
            *rerun, *[f"  {command}" for command in found]]


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def examples(states: list[RunState], state: str, why: str) -> list[str]:
    chosen = [s for s in states if s.state == state]
    if not chosen:
        return []
    lines = [f"{len(chosen)} {state} ({why}):"]
    lines += [f"  {s.directory}" + (f"  {s.detail}" if s.detail else "") for s in chosen[:SHOWN]]
    return lines + ([f"  … {len(chosen) - SHOWN} more"] if len(chosen) > SHOWN else [])


def error_kind(error: str) -> str:
    """An error message with its numbers and addresses blanked, so that `… at optimizer step 3` and `… step 7`
    group together."""
    first = error.strip().splitlines()[0] if error.strip() else "unknown error"
    first = re.sub(r"0x[0-9a-fA-F]+", "0x…", first)
    return re.sub(r"(?<![\w.])[-+]?\d+(\.\d+)?([eE][-+]?\d+)?(?![\w.])", "<n>", first)


def failed_by_error(states: list[RunState]) -> list[str]:
    failed = [s for s in states if s.state == "failed"]
    if not failed:
        return []
    groups: dict[str, list[RunState]] = {}
    for s in failed:
        groups.setdefault(error_kind(s.detail), []).append(s)
    lines = [f"failed runs by error ({len(failed)}):"]
    for kind, runs in sorted(groups.items(), key=lambda item: -len(item[1])):
        steps = sorted({r.record.failed_step for r in runs if r.record and r.record.failed_step is not None})
        where = f" (steps {', '.join(map(str, steps[:SHOWN]))})" if steps else ""
        lines.append(f"  {len(runs):5d}  {kind}{where}")
        lines += [f"         {r.directory}" for r in runs[:2]]
    return lines


def slowest(states: list[RunState]) -> list[str]:
    done = [s for s in states if s.state == "completed" and s.record.seconds("wall_s")]
    if not done:
        return []
    done.sort(key=lambda s: -s.record.seconds("wall_s"))
    lines = ["slowest completed runs:"]
    for s in done[:SHOWN]:
        record, memory = s.record, s.record.section("memory")
        per_s = record.seconds("train_samples_per_s")
        speed = f"{per_s:.1f} samples/s" if per_s else ""
        peak = f"peak {memory['peak_bytes'] / 2**30:.2f} GiB" if memory.get("peak_bytes") else ""
        lines.append(f"  {record.seconds('wall_s'):9.1f}s  {speed:>18}  {peak:>15}  {s.directory}")
    return lines


def progress(states: list[RunState], remaining_s: float, basis: str, now: float | None = None) -> list[str]:
    """Finished compute so far, the estimate for the rest, and the recent completion rate of a running sweep."""
    now = time.time() if now is None else now
    done = [s for s in states if s.state == "completed"]
    spent = sum(s.record.seconds("wall_s") or 0.0 for s in done)
    left = sum(s.state in RELAUNCH or s.state == "running" for s in states)
    lines = [f"finished: {plural(len(done), 'run')}, {estimates.hours(spent)} of compute; "
             f"remaining: {plural(left, 'run')}, about {estimates.hours(remaining_s)} of compute ({basis or 'nothing left'})"]
    stamps = sorted(s.directory.joinpath("results.json").stat().st_mtime for s in done
                    if s.directory.joinpath("results.json").is_file())[-50:]
    running = sum(s.state == "running" for s in states)
    if running and len(stamps) >= 2 and stamps[-1] > stamps[0]:
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])  # completions per second, over the last ones
        lines.append(f"recent rate: {3600 * rate:.1f} runs/h ({running} running; last completion "
                     f"{(now - stamps[-1]) / 60:.0f} min ago) → the {left} left take about "
                     f"{estimates.hours(left / rate)} at that rate")
    return lines


def needs(plan: Plan) -> list[str]:
    """What the runs read: each model's weights and each task's files (local, or the hub), and whether they are
    here; one config composed per task."""
    firsts = {}
    for job in plan.jobs:
        firsts.setdefault(job.task, job)
    weights, data = {}, []
    for task, job in firsts.items():
        cfg = compose([o for o in job.overrides if not o.lstrip("+~").startswith("hydra")])
        weights[cfg.model.name] = _weights(cfg.model)
        if cfg.data.source == "hub":
            data.append(f"  {task}: hub:{cfg.task.hub.path}/{cfg.task.hub.name}")
            continue
        data_spec, task_spec = build(DataSpec, cfg.data, "data"), build(TaskSpec, cfg.task, "task")
        paths = [task_file(data_spec, task_spec, split) for split in cfg.task.files
                 if not split.startswith("test") or cfg.task.report == "test"]
        missing = [str(p) for p in paths if not p.is_file()]
        data.append(f"  {task}: " + ("local files present" if not missing else
                                     f"MISSING {', '.join(missing)} (use data.source=hub or data.dir=)"))
    return ["needs:", *(f"  {name} weights: {where}" for name, where in weights.items()), *data] if firsts else []


def _weights(model) -> str:
    if model.path and str(model.path).startswith("pkg:"):  # pkg:<package>/<folder>: shipped by a Python package
        package = str(model.path)[4:].split("/", 1)[0]
        return f"{model.path}" + ("" if importlib.util.find_spec(package) else f" (package {package} not installed)")
    if model.path:
        return f"{model.path}" + ("" if Path(str(model.path)).expanduser().is_dir() else " (not found here)")
    if model.init == "random" or not model.hub_id:
        return "none (random init)"
    from huggingface_hub import try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(model.hub_id, "config.json"), str)
    return f"hub:{model.hub_id}" + (" (in the local cache)" if cached else " (not cached: downloaded on first use)")
