"""`<out>/<paper>/report.md`: recipe and scale, machine, wall time, the paper's table beside ours, the chosen rates
(† at the grid's edge), the claims with their tests and verdicts, and the Pareto plot — built from the records
(and sessions.json for the wall time) alone, so `--report` rebuilds it at any time."""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import numpy as np
import pandas as pd

from spafit_exp.core.results import cpu_summary
from spafit_exp.report.cells import EDGE, MISSING, task_label
from spafit_exp.repro.claims import Verdict
from spafit_exp.repro.figure import pareto_png
from spafit_exp.repro.recipe import SCREEN_SEED, Layout, Paper, Scale, base_overrides, lr_text, planned_runs, repeat_seeds
from spafit_exp.sweep import estimates

REPORT, PLOT = "report.md", "pareto.png"
SECTIONS = ("## Recipe and scale", "## Machine", "## Wall time", "## Table: paper vs ours", "## Chosen learning rates",
            "## Claims", "## Pareto plot")


def _paper_value(paper: Paper, row: str, task: str) -> str:
    value = paper.published.rows.get(row, {}).get(task)
    if value is None:
        return "n/a"
    text = f"{100 * value:.{max(paper.published.decimals - 2, 0)}f}"
    std = paper.published.std.get(row, {}).get(task)
    return text + (f" ± {100 * std:.{max(paper.published.decimals - 2, 0)}f}" if std is not None else "")


def _ours(cell) -> str:
    if not cell.scores:
        return MISSING + (f" ({cell.failed} failed)" if cell.failed else "")
    text = f"{100 * cell.mean:.1f}" + (f" ± {100 * cell.std:.1f}" if not math.isnan(cell.std) else "")
    return text + (f" (n={len(cell.scores)})" if len(cell.scores) else "")


def table(paper: Paper, rows: list[str], tasks: list[str], cells: dict) -> list[str]:
    head = ["row", "params (paper)", "trainable % (ours)"] + [f"{task_label(t)} ({cells[(rows[0], t)].metric}) "
                                                              "paper / ours" for t in tasks] + ["avg paper / ours"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        fractions = [cells[(row, t)].fraction for t in tasks if not math.isnan(cells[(row, t)].fraction)]
        published = [paper.published.rows.get(row, {}).get(t) for t in tasks]
        ours = [cells[(row, t)].mean for t in tasks]
        avg_paper = f"{100 * np.mean(published):.1f}" if all(v is not None for v in published) else "n/a"
        avg_ours = f"{100 * np.mean(ours):.1f}" if not any(math.isnan(v) for v in ours) else MISSING
        parts = [row, paper.published.params.get(row, "n/a"),
                 f"{100 * np.mean(fractions):.3g}" if fractions else MISSING]
        parts += [f"{_paper_value(paper, row, t)} / {_ours(cells[(row, t)])}" for t in tasks]
        lines.append("| " + " | ".join(parts + [f"{avg_paper} / {avg_ours}"]) + " |")
    return lines


def rates(rows: list[str], tasks: list[str], cells: dict, screen: bool) -> list[str]:
    what = f"seed {SCREEN_SEED}'s dev score" if screen else "mean dev score over seeds"
    lines = [f"Rates tried with {what} (main metric); the chosen rate is bold, {EDGE} marks a chosen rate at the edge "
             "of the rates tried (the optimum may lie beyond it).", "",
             "| row | task | rates tried | chosen | seeds at the chosen rate | failed runs |", "|---|---|---|---|---|---|"]
    for row in rows:
        for task in tasks:
            cell = cells[(row, task)]
            tried = ", ".join((f"**{lr_text(lr)}**" if np.isclose(lr, cell.lr) else lr_text(lr)) + f" ({100 * v:.1f})"
                              for lr, v in sorted(cell.tried.items())) or MISSING
            chosen = MISSING if math.isnan(cell.lr) else lr_text(cell.lr) + (EDGE if cell.edge else "")
            lines.append(f"| {row} | {task} | {tried} | {chosen} | {len(cell.scores)} | {cell.failed} |")
    return lines


def claims_table(verdicts: list[Verdict]) -> list[str]:
    lines = ["| # | claim (where) | test | ours | p | verdict |", "|---|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v.claim.id} | {v.claim.text} ({v.claim.source}) | {v.test} | {v.numbers} | {v.p} | "
                     f"**{v.verdict}** |")
    return lines


def wall(sessions: list[dict], runs: pd.DataFrame, expected: int | None) -> list[str]:
    lines = []
    if sessions:
        elapsed = sum(float(s.get("wall_s") or 0) for s in sessions)
        first = datetime.datetime.fromtimestamp(sessions[0]["started"], datetime.timezone.utc)
        lines.append(f"- elapsed: {estimates.hours(elapsed)} ({elapsed:,.0f} s) over {len(sessions)} session(s) of this "
                     f"command, the first started {first:%Y-%m-%d %H:%M} UTC; {sum(s.get('ran', 0) for s in sessions)} "
                     f"runs run, {sum(s.get('skipped', 0) for s in sessions)} found done")
    else:
        lines.append("- elapsed: no session of this command recorded here (sessions.json): runs launched elsewhere")
    done = runs[runs.status == "completed"] if not runs.empty else runs
    spent = float(done.train_s.sum()) if not done.empty and "train_s" in done else 0.0
    lines.append(f"- runs: {len(done)} completed, {len(runs) - len(done)} not completed"
                 + (f", {expected} planned (edge extensions aside)" if expected else "")
                 + f"; their training time adds up to {estimates.hours(spent)}")
    return lines


def write(paper: Paper, scale_name: str, scale: Scale | None, where: Layout, runs: pd.DataFrame, cells: dict,
          verdicts: list[Verdict], sessions: list[dict], machines: list[str], command: str,
          overrides: list[str] = ()) -> Path:
    rows = list(dict.fromkeys(row for row, _ in cells))
    tasks = list(dict.fromkeys(task for _, task in cells))
    where.folder.mkdir(parents=True, exist_ok=True)
    plotted = pareto_png(cells, rows, tasks, f"{paper.name} ({scale_name} scale): score vs trainable share",
                         where.folder / PLOT)
    expected = planned_runs(scale) if scale else None
    recipe = [f"- command: `{command}`", f"- preset: `experiment={paper.preset}` (its optimizer, schedule, head and "
              "stages)" + (f", scaled: model `{scale.model}`, {scale.train_rows or 'all'} training rows, "
                           f"{scale.eval_rows or 'all'} evaluation rows, {scale.epochs or 'the preset’s'} epoch(s)"
                           if scale else ", unchanged"),
              f"- tasks: {', '.join(tasks)}; rows: {len(rows)}; runs under `{where.runs}/`"]
    if scale:
        recipe += [f"- learning rate: each row's recommended rate (`lr:` of its method / selector YAML) and its "
                   f"neighbours on the paper's grid ({scale.rates} rates; mantissas {', '.join(f'{m:g}' for m in paper.grid)}"
                   f" per decade), screened on seed {SCREEN_SEED} on the selection split (dev)"
                   + (f", extended up to {scale.extensions} time(s) past an edge" if scale.extensions else "")
                   + f"; the chosen rate repeated on {repeat_seeds(scale)}",
                   f"- every run: `python -m spafit_exp {' '.join(base_overrides(paper, scale, where, overrides))} "
                   "<the row's overrides> task=… trainer.lr=… trainer.seed=…`",
                   "- rows: " + "; ".join(f"{row.key}: `{' '.join(row.overrides)}`" for row in scale.rows),
                   f"- note: {scale.note}"]
    else:
        recipe.append("- learning rate: the preset's grid on every seed; chosen by the best mean dev score (as "
                      "`make tables`)")
    recipe.append(f"- the paper's rule: {paper.selection}")
    text = [f"# Reproduction: {paper.title}", "",
            f"Scale **{scale_name}**, written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC from "
            "the records alone (`--report` rebuilds it).", "", SECTIONS[0], *recipe, "", SECTIONS[1],
            *(f"- runs ran on: {m}" for m in machines or ["no records yet"]), f"- report written on: {cpu_summary()}",
            "", SECTIONS[2], *wall(sessions, runs, expected), "", SECTIONS[3],
            f"Paper: {paper.published.source}; {paper.published.note}. Ours: mean ± std over seeds at the chosen rate, "
            "×100, on the split the paper reports.", "", *table(paper, rows, tasks, cells), "", SECTIONS[4],
            *rates(rows, tasks, cells, screen=scale is not None), "", SECTIONS[5],
            f"Each claim is checked on our seeds (α = 0.05); scores ×100. {len(verdicts)} claims: "
            + ", ".join(f"{sum(v.verdict == k for v in verdicts)} {k}" for k in ("holds", "contradicted", "inconclusive"))
            + ".", "", *claims_table(verdicts), "", SECTIONS[6],
            f"![score vs trainable parameters]({PLOT})" if plotted else "No cell has a score yet: nothing to plot.", ""]
    path = where.folder / REPORT
    path.write_text("\n".join(text))
    return path
