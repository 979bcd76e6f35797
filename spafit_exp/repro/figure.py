"""The report's Pareto plot: per task, each row's score (mean ± std over seeds at its chosen rate) against its
trainable share of the parameters, with the Pareto front (`plots.pareto_front`)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402

from spafit_exp.report.cells import task_label  # noqa: E402
from spafit_exp.report.plots import MARKERS, pareto_front  # noqa: E402


def pareto_png(cells: dict, rows: list[str], tasks: list[str], title: str, path: Path) -> bool:
    """Writes `path` when at least one cell has a score and a parameter count; returns whether it did."""
    shown = [t for t in tasks if any(_point(cells[(r, t)]) for r in rows)]
    if not shown:
        return False
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown) + 1.8, 4.0), squeeze=False)
    handles = {}
    for ax, task in zip(axes[0], shown):
        points = []
        for i, row in enumerate(rows):
            point = _point(cells[(row, task)])
            if point is None:
                continue
            x, y, err = point
            handle = ax.errorbar(x, y, yerr=err, fmt=MARKERS[i % len(MARKERS)], color=f"C{i % 10}", capsize=3,
                                 markersize=6)
            handles.setdefault(row, handle)
            points.append((x, y))
        front = pareto_front(points)
        (line,) = ax.plot([p for p, _ in front], [s for _, s in front], "k--", linewidth=1)
        handles.setdefault("Pareto front", line)
        metric = next(cells[(r, task)].metric for r in rows)
        ax.set(xscale="log", xlabel="trainable parameters (%)", ylabel=f"{metric} (%)", title=task_label(task))
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7, title="row (mean ± std)",
               title_fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 1.7 / (4.2 * len(shown) + 1.8), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def _point(cell) -> tuple[float, float, float] | None:
    if not cell.scores or not (cell.fraction > 0):
        return None
    std = cell.std
    return 100 * cell.fraction, 100 * cell.mean, 0.0 if math.isnan(std) else 100 * std
