"""`--plan`: what a reproduction runs, what is done, what is left and about how long it takes — without running
anything. Scale `paper` is the preset's own sweep(s), expanded and reported by `sweep plan`'s code
(sweep.plan_report), so both print the same `runs=`; scales tiny and cpu are expanded the same way, one sweep per
row (its screen: every task × rate on seed 1), plus the repeats of each chosen rate on the other seeds."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from omegaconf import OmegaConf

from spafit_exp.core.run_dir import RELAUNCH, RunDir
from spafit_exp.repro.recipe import SCREEN_SEED, Layout, Paper, Row, Scale, base_overrides, lr_text, repeat_seeds, screen_rates
from spafit_exp.run.config import check_overrides_compose
from spafit_exp.sweep import cli as sweep
from spafit_exp.sweep import estimates
from spafit_exp.sweep import overview as sweep_report
from spafit_exp.sweep.plan import Plan, expand


def screen_plan(paper: Paper, scale: Scale, where: Layout, overrides: list[str]) -> tuple[Plan, dict[str, list[float]]]:
    """The screen's jobs, expanded as `python -m spafit_exp -m` would (one sweep per row), and each row's rates."""
    base = base_overrides(paper, scale, where, overrides)
    jobs, models, rates = [], {}, {}
    for row in scale.rows:
        rates[row.key] = screen_rates(paper, scale, base, row, scale.tasks[0])
        plan = expand([*base, *row.overrides, f"task={','.join(scale.tasks)}",
                       f"trainer.lr={','.join(lr_text(r) for r in rates[row.key])}", f"trainer.seed={SCREEN_SEED}"])
        jobs += plan.jobs
        models.update(plan.models)
    return Plan(args=base, sweep_keys=[], sweep_values={}, jobs=jobs, sweep_dir=where.runs, models=models), rates


def seed_score(directory: Path) -> float:
    """The dev main metric of a completed run (what the screen chooses by); NaN otherwise."""
    state = RunDir(directory).state()
    if state.state != "completed":
        return math.nan
    value = state.record.scores("dev").get(state.record.main_metric)
    return float(value) if isinstance(value, (int, float)) else math.nan


def repeat_jobs(plan: Plan, scale: Scale, where: Layout) -> tuple[list, int]:
    """Jobs of the other seeds at each cell's chosen rate (the recommended one while its screen is unfinished,
    for the estimate), and how many cells have a chosen rate."""
    cells: dict[tuple[str, str], list] = {}
    for job in plan.jobs:
        cells.setdefault((job.task, job.method_tag), []).append(job)
    jobs, known = [], 0
    for (task, tag), screen in cells.items():
        scores = {job.lr: seed_score(job.run_dir) for job in screen}
        finished = all(not math.isnan(s) for s in scores.values())
        known += finished
        lr = max(scores, key=lambda r: scores[r]) if finished else screen[len(screen) // 2].lr
        for seed in range(SCREEN_SEED + 1, SCREEN_SEED + scale.seeds):
            directory = RunDir.of(where.run_root, where.experiment, task, tag, screen[0].model, lr_text(lr), seed).path
            jobs.append(dataclasses.replace(screen[0], lr=lr, seed=seed, run_dir=directory, swept=()))
    return jobs, known


def scaled_report(paper: Paper, scale: Scale, where: Layout, overrides: list[str], tflops: float) -> str:
    plan, rates = screen_plan(paper, scale, where, overrides)
    repeats, known = repeat_jobs(plan, scale, where)
    everything = dataclasses.replace(plan, jobs=plan.jobs + repeats)
    states = [RunDir(job.run_dir).state() for job in everything.jobs]
    seconds, basis = sweep_report.estimate(everything, states, sweep.records_under(where.runs, states), tflops)
    cells = len(scale.rows) * len(scale.tasks)
    lines = [f"reproduction: {paper.name}, scale {scale.name} — {len(scale.rows)} rows × {len(scale.tasks)} tasks "
             f"({', '.join(scale.tasks)}) on {scale.model}, {scale.seeds} seeds, {scale.train_rows or 'all'} training "
             f"rows, {scale.epochs or 'the preset’s'} epoch(s)",
             f"runs: {where.runs}/", f"runs={len(everything.jobs)}",
             f"  screen: {len(plan.jobs)} runs (seed {SCREEN_SEED}, each row's rates on every task)",
             f"  repeat: {len(repeats)} runs ({repeat_seeds(scale)} at the chosen rate; chosen for {known} of {cells} "
             "cells so far)"]
    if scale.extensions:
        lines.append(f"  edge extensions: up to {scale.extensions * cells} more runs (a chosen rate at the grid's edge "
                     "gets the next rate past it, the paper's rule)")
    lines += ["rates screened per row: " + "; ".join(f"{k} {', '.join(lr_text(r) for r in v)}" for k, v in rates.items()),
              sweep_report.counts(states), "", sweep_report.per_task_method(everything, states), ""]
    left = sum(s.state in RELAUNCH for s in states)
    lines.append(f"estimate: {sweep_report.plural(left, 'run')} to run ≈ {estimates.hours(seconds)} of compute"
                 + (f" ({basis})" if basis else ""))
    return "\n".join(lines + sweep_report.needs(plan))


def paper_sweeps(paper: Paper, overrides: list[str]) -> list[list[str]]:
    return [[*args, *overrides] for args in paper.paper_sweeps]


def paper_report(paper: Paper, overrides: list[str], tflops: float) -> str:
    """Each of the paper's sweeps as `python -m spafit_exp.sweep plan -m <args>` prints it, then the total."""
    blocks, total = [], 0
    for args in paper_sweeps(paper, overrides):
        plan = expand(args)
        total += len(plan.jobs)
        blocks.append(sweep.plan_report(plan, tflops))  # its needs: included
    return "\n\n".join(blocks) + (f"\n\ntotal: runs={total} over {len(blocks)} sweeps" if len(blocks) > 1 else "")


def row_tags(paper: Paper, scale: Scale | None, rows: tuple[Row, ...], where: Layout,
             overrides: list[str]) -> tuple[dict[str, str], str]:
    """Row key -> method tag (what names its records), from the row's composed config; and the model's name."""
    if scale is None:
        base, task = [f"experiment={paper.preset}", *overrides], None
    else:
        base, task = base_overrides(paper, scale, where, overrides), scale.tasks[0]
    tags, model = {}, None
    for row in rows:
        # the first job of the row's sweep (a `task=a,b` override reduced to `a`), hydra.* overrides left out
        cfg = check_overrides_compose([*base, *row.overrides] + ([f"task={task}"] if task else []))
        tags[row.key], model = OmegaConf.select(cfg, "method.tag"), cfg.model.name
    return tags, model
