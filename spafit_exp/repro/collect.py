"""Records -> the reproduction's cells, from the run records alone (`cells.collect`), one per (row, task):
the chosen rate and whether it sits at the grid's edge (`cells.select_lr`, as `make tables` marks it), the rates
tried with their seed-1 scores, and the per-seed scores at the chosen rate in the paper's metric on the split the
paper reports. Scales tiny and cpu choose on seed 1 (the screen); scale paper on the mean over seeds, as
`make tables` does."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spafit_exp.report.cells import collect, select_lr
from spafit_exp.report.layouts import layout_of
from spafit_exp.repro.claims import Evidence
from spafit_exp.repro.recipe import SCREEN_SEED, Paper, Row


@dataclass
class Cell:
    row: str
    task: str
    metric: str
    lr: float = math.nan
    edge: bool = False
    tried: dict[float, float] = field(default_factory=dict)  # rate -> dev main metric of the screen seed (or mean)
    scores: dict[int, float] = field(default_factory=dict)  # seed -> score at the chosen rate
    trainable: float = math.nan
    fraction: float = math.nan  # trainable / total parameters
    failed: int = 0
    runs: int = 0

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.scores.values()))) if self.scores else math.nan

    @property
    def std(self) -> float:
        return float(np.std(list(self.scores.values()), ddof=1)) if len(self.scores) > 1 else math.nan


def metric_of(paper: Paper, task: str, runs: pd.DataFrame) -> str:
    """The paper's metric for a task (its table layout), else the task's main metric."""
    for column in layout_of(paper.preset).columns:
        if column.task == task:
            return column.metrics[0]
    mains = runs[runs.task == task].main_metric.dropna() if not runs.empty else []
    return str(mains.iloc[0]) if len(mains) else "accuracy"


def gather(paper: Paper, rows: tuple[Row, ...], tags: dict[str, str], tasks, runs_dir: Path, screen: bool,
           model: str | None = None) -> tuple[pd.DataFrame, dict[tuple[str, str], Cell]]:
    runs = collect(runs_dir) if Path(runs_dir).is_dir() else pd.DataFrame()
    if not runs.empty and model is not None:
        runs = runs[runs.model == model]
    by_tag = {tags[row.key]: row.key for row in rows}
    cells = {}
    for row in rows:
        for task in tasks:
            cells[(row.key, task)] = Cell(row.key, task, metric_of(paper, task, runs))
    if runs.empty:
        return runs, cells
    runs = runs[runs.method_tag.isin(by_tag) & runs.task.isin(list(tasks))]
    for (task, tag), group in runs.groupby(["task", "method_tag"]):
        cell = cells[(by_tag[tag], task)]
        cell.runs, cell.failed = len(group), int((group.status != "completed").sum())
        pool = group[group.seed == SCREEN_SEED] if screen else group
        chosen = select_lr(pool) if not pool.empty else pd.DataFrame()
        if chosen.empty or "lr" not in chosen or pd.isna(chosen.lr.iloc[0]):
            continue
        pick = chosen.iloc[0]
        cell.lr, cell.edge = float(pick.lr), bool(pick.edge)
        done = pool[pool.status == "completed"]
        main = f"dev.{pick.main_metric}"
        if main in done:
            cell.tried = {float(lr): float(v) for lr, v in done.groupby("lr")[main].mean().items()}
        at = group[(group.status == "completed") & np.isclose(group.lr, cell.lr)]
        column = f"{at.reported_split.iloc[0]}.{cell.metric}" if len(at) else None
        if column in at:
            cell.scores = {int(s): float(v) for s, v in zip(at.seed, at[column]) if pd.notna(v)}
            cell.trainable = float(at.trainable.mean())
            cell.fraction = float((at.trainable / at.total).mean())
    return runs, cells


def evidence(rows: tuple[Row, ...], cells: dict[tuple[str, str], Cell]) -> Evidence:
    scores: dict[str, dict[str, dict[int, float]]] = {}
    trainable: dict[str, list[float]] = {}
    for (row, task), cell in cells.items():
        if cell.scores:
            scores.setdefault(row, {})[task] = cell.scores
            trainable.setdefault(row, []).append(cell.trainable)
    return Evidence(scores=scores, groups={row.key: row.groups for row in rows},
                    trainable={row: float(np.nanmean(v)) for row, v in trainable.items()})


def machines(runs: pd.DataFrame) -> list[str]:
    """The CPUs the records ran on and their library versions, from the records' provenance."""
    found = {}
    for path in runs.path if not runs.empty else []:
        try:
            prov = json.loads(Path(path).read_text()).get("provenance") or {}
        except (OSError, ValueError):
            continue
        key = f"{prov.get('cpu', 'unknown CPU')} [{' '.join(prov.get('isa') or [])}], {prov.get('cpus', '?')} CPUs"
        versions = prov.get("versions") or {}
        found.setdefault(key, f"torch {versions.get('torch', '?')}, transformers {versions.get('transformers', '?')}")
    return [f"{cpu}; {libs}" for cpu, libs in found.items()]
