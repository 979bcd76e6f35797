"""Figures from computed cells (cells.select_lr) and their runs, PNG + PDF each, under <plots>/<experiment>/:
score vs trainable parameters and score vs peak memory, each with its Pareto front (which methods buy their score
cheapest, in parameters and in memory), per-method LR
curves (is the chosen LR a peak or a grid edge?), and the selected LR vs subset size (subset paper, Figure 2)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from spafit_exp.safe_paths import check_component  # noqa: E402

MARKERS = "osD^v<>pPX*h"


def _save(fig, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    outs = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for out in outs:
        fig.savefig(out, dpi=150)
    plt.close(fig)
    return outs


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by one with a lower (or equal) cost and a higher score."""
    front, best = [], float("-inf")
    for params, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append((params, score))
            best = score
    return front


def _name(model: str, tag: str, models: int) -> str:
    return f"{tag} ({model})" if models > 1 else tag


# x axis of each Pareto plot: cell column, axis label, scale to print it in, file name prefix
COSTS = {"trainable": ("trainable parameters", 1, "pareto"), "peak_bytes": ("peak memory (GiB)", 2**30, "pareto_memory")}


def plot_pareto(experiment: str, task: str, cells: pd.DataFrame, out: Path, cost: str = "trainable") -> list[Path]:
    """Score vs a cost (`COSTS`: trainable parameters, or peak memory from the records) with its Pareto front."""
    label, scale, prefix = COSTS[cost]
    main = cells.main_metric.iloc[0]
    if cost not in cells:
        return []
    cells = cells[cells[cost].notna() & cells[f"mean.{main}"].notna()]
    if cells.empty:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (_, cell) in enumerate(cells.iterrows()):
        ax.scatter(cell[cost] / scale, 100 * cell[f"mean.{main}"], marker=MARKERS[i % len(MARKERS)],
                   label=_name(cell.model, cell.method_tag, cells.model.nunique()))
    front = pareto_front([(float(c[cost]) / scale, 100 * float(c[f"mean.{main}"])) for _, c in cells.iterrows()])
    ax.plot([p for p, _ in front], [s for _, s in front], "k--", linewidth=1, label="Pareto front")
    ax.set(xscale="log", xlabel=label, ylabel=f"dev {main} (%)", title=f"{experiment}: {task}")
    ax.legend(fontsize=6)
    return _save(fig, out / experiment / f"{prefix}_{task}")


def plot_lr_curves(experiment: str, task: str, runs: pd.DataFrame, out: Path) -> list[Path]:
    main = f"dev.{runs.main_metric.dropna().iloc[0]}" if runs.main_metric.notna().any() else None
    done = runs[runs.status == "completed"]
    if main not in done or done[main].isna().all():
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, ((model, tag), group) in enumerate(done.groupby(["model", "method_tag"])):
        curve = group.groupby("lr")[main].mean().dropna()
        ax.plot(curve.index, 100 * curve.values, marker=MARKERS[i % len(MARKERS)],
                label=_name(model, tag, done.model.nunique()))
    ax.set(xscale="log", xlabel="learning rate", ylabel=f"mean {main} (%)", title=f"{experiment}: {task}")
    ax.legend(fontsize=6)
    return _save(fig, out / experiment / f"lr_curves_{task}")


def plot_lr_vs_size(experiment: str, cells: pd.DataFrame, out: Path) -> list[Path]:
    """Only for sweeps over the subset size: a line needs more than one size for a (task, selector)."""
    sized = cells[cells["size"].notna() & cells.fraction.notna() & cells.lr.notna()]
    lines = [(key, g.sort_values("fraction")) for key, g in sized.groupby(["task", "selector"])
             if g.fraction.nunique() > 1]
    if not lines:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (task, selector), g in lines:
        ax.plot(g.fraction, g.lr, marker="o", label=f"{task} {selector}")
        edges = g[g.edge.astype(bool)]
        ax.scatter(edges.fraction, edges.lr, marker="^", s=60, color="red", zorder=3)
    ax.set(xscale="log", yscale="log", xlabel="subset size (fraction of candidates)", ylabel="selected LR",
           title=f"{experiment}: selected LR (red ^: grid edge)")
    ax.legend(fontsize=6)
    return _save(fig, out / experiment / "lr_vs_subset_size")


def write_plots(computed: list[tuple[str, pd.DataFrame, pd.DataFrame]], out: Path) -> list[Path]:
    """`computed`: (experiment, its runs, its cells) triples, as `make tables` selected them."""
    written = []
    for experiment, runs, cells in computed:
        check_component("experiment", experiment)  # folder and file names below: never `../x`
        if "lr" not in cells:  # no completed run anywhere in this experiment
            continue
        for task, group in cells[cells.lr.notna()].groupby("task"):
            check_component("task", task)
            written += plot_pareto(experiment, task, group, out)
            written += plot_pareto(experiment, task, group, out, cost="peak_bytes")
            written += plot_lr_curves(experiment, task, runs[runs.task == task], out)
        written += plot_lr_vs_size(experiment, cells, out)
    return written
