"""Figures from computed cells (cells.select_lr) and their runs, PNG + PDF each, under <plots>/<experiment>/:
score vs trainable parameters and score vs peak memory, each with its Pareto front (which methods buy their score
cheapest, in parameters and in memory), per-method LR curves (is the chosen LR a peak or a grid edge?), learning
curves (training loss and dev score per epoch at each method's chosen LR), and the selected LR vs subset size
(subset paper, Figure 2). Every score is a mean over seeds with its std as an error bar; methods and metrics carry
their display names (names.py). A figure with a single point to show is not drawn."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, NullLocator  # noqa: E402

from spafit_exp.core.safe_paths import check_component  # noqa: E402
from spafit_exp.report.names import method_name, metric_name, row_order, selector_name  # noqa: E402

MARKERS = "osD^v<>pPX*h"
FRONT = "Pareto front"


def _save(fig, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    outs = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for out in outs:
        fig.savefig(out, dpi=100)  # PNG for a quick look or the docs; the PDF (vector) is the paper's
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
    return f"{method_name(tag)} ({model})" if models > 1 else method_name(tag)


def _score(task_label: str, split: str, metric: str) -> str:
    """An axis label: `MRPC dev F1 (%)`."""
    return f"{task_label} {split} {metric_name(metric)} (%)"


def _ordered(cells: pd.DataFrame) -> pd.DataFrame:
    """Methods in the tables' row order (names.row_order): the same method keeps its colour and place."""
    return cells.iloc[sorted(range(len(cells)), key=lambda i: row_order(cells.model.iloc[i], cells.method_tag.iloc[i]))]


def _legend(ax) -> None:
    """Methods in drawing order, the Pareto front (a line, listed first by matplotlib) last."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == FRONT)
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7)


def _std(value) -> float:
    """One seed has no std: a zero-length bar, so every point still carries its (empty) error bar."""
    return 0.0 if pd.isna(value) else float(value)


def _x_axis(ax, values, log: bool) -> None:
    """Rates (`log`): log scale with a tick at each rate run, when they are few and far enough apart for their
    labels, else powers of ten only. Costs over a decade or more: log scale, powers of ten only; over less, a log
    axis labels its minor ticks (1.2, 1.3, ... GiB) and they overlap: a linear scale with a few ticks instead."""
    values = sorted({float(v) for v in values if pd.notna(v) and v > 0})
    ax.margins(x=0.1)  # no marker or error bar cut by the frame
    span = np.log10(values[-1] / values[0]) if values else 0.0
    gaps = np.diff(np.log10(values))
    if log and (len(values) == 1 or (len(values) <= 8 and gaps.min() >= 0.12 * 1.2 * span)):  # a label ~ 1/9 axis
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(values)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    elif log or span >= 1:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(4))


# x axis of each Pareto plot: cell column, axis label, scale to print it in, file name prefix
COSTS = {"trainable": ("trainable parameters", 1, "pareto"), "peak_bytes": ("peak memory (GiB)", 2**30, "pareto_memory")}


def plot_pareto(experiment: str, task: str, cells: pd.DataFrame, out: Path, cost: str = "trainable") -> list[Path]:
    """Score (mean ± std over seeds) vs a cost (`COSTS`: trainable parameters, or peak memory from the records)
    with its Pareto front; nothing for fewer than two points (nothing to compare)."""
    label, scale, prefix = COSTS[cost]
    main = cells.main_metric.iloc[0]
    if cost not in cells or f"mean.{main}" not in cells:
        return []
    cells = _ordered(cells[cells[cost].notna() & cells[f"mean.{main}"].notna()])
    if len(cells) < 2:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (_, cell) in enumerate(cells.iterrows()):
        ax.errorbar(cell[cost] / scale, 100 * cell[f"mean.{main}"], yerr=100 * _std(cell.get(f"std.{main}")),
                    fmt=MARKERS[i % len(MARKERS)], capsize=3, label=_name(cell.model, cell.method_tag,
                                                                         cells.model.nunique()))
    front = pareto_front([(float(c[cost]) / scale, 100 * float(c[f"mean.{main}"])) for _, c in cells.iterrows()])
    if len(front) > 1:  # a front of one point is no line: no legend entry for it either
        ax.plot([p for p, _ in front], [s for _, s in front], "k--", linewidth=1, label=FRONT)
    _x_axis(ax, cells[cost] / scale, log=False)
    split = cells.reported_split.iloc[0] if "reported_split" in cells else "dev"
    ax.set(xlabel=label, ylabel=_score(cells.task_label.iloc[0], split, main), title=cells.task_label.iloc[0])
    _legend(ax)
    return _save(fig, out / experiment / f"{prefix}_{task}")


def plot_lr_curves(experiment: str, task: str, runs: pd.DataFrame, out: Path) -> list[Path]:
    """Dev main metric (mean ± std over seeds) vs LR per method; nothing when no method tried two rates."""
    metric = runs.main_metric.dropna().iloc[0] if runs.main_metric.notna().any() else None
    done = runs[runs.status == "completed"]
    if f"dev.{metric}" not in done:
        return []
    done = done[done[f"dev.{metric}"].notna() & done.lr.notna()]
    groups = sorted(done.groupby(["model", "method_tag"]), key=lambda group: row_order(*group[0]))
    if not any(group.lr.nunique() > 1 for _, group in groups):
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, ((model, tag), group) in enumerate(groups):
        curve = group.groupby("lr")[f"dev.{metric}"].agg(["mean", "std"])
        ax.errorbar(curve.index, 100 * curve["mean"], yerr=100 * curve["std"].map(_std),
                    marker=MARKERS[i % len(MARKERS)], capsize=3, label=_name(model, tag, done.model.nunique()))
    _x_axis(ax, done.lr, log=True)
    label = runs.task_label.iloc[0]
    ax.set(xlabel="learning rate", ylabel=_score(label, "dev", metric), title=f"{label}: score vs learning rate")
    ax.legend(fontsize=7)
    return _save(fig, out / experiment / f"lr_curves_{task}")


def _epochs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per epoch: mean and std over the runs (seeds) of the dev main metric and the training loss."""
    points = [p for curve in runs.curve if isinstance(curve, list) for p in curve]
    frame = pd.DataFrame(points, columns=["epoch", "dev", "loss"], dtype=float)
    return frame.groupby("epoch").agg(["mean", "std"])


def plot_learning_curves(experiment: str, task: str, runs: pd.DataFrame, cells: pd.DataFrame,
                         out: Path) -> list[Path]:
    """Training loss and dev main metric per epoch (mean ± std over seeds) for each method at its chosen LR
    (records' `metrics.epochs`, `train.losses`); nothing when no method has two epochs to connect."""
    if "curve" not in runs or "lr" not in cells:
        return []
    done = runs[runs.status == "completed"]
    lines = []
    for _, cell in _ordered(cells[cells.lr.notna()]).iterrows():
        chosen = done[(done.model == cell.model) & (done.method_tag == cell.method_tag) & (done.lr == cell.lr)]
        stats = _epochs(chosen)
        if len(stats) > 1:
            lines.append((cell, stats))
    if not lines:
        return []
    fig, (loss_ax, dev_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, (cell, stats) in enumerate(lines):
        style = dict(marker=MARKERS[i % len(MARKERS)], capsize=3, color=f"C{i % 10}",
                     label=_name(cell.model, cell.method_tag, cells.model.nunique()))
        loss, dev = stats["loss"].dropna(subset=["mean"]), stats["dev"].dropna(subset=["mean"])
        loss_ax.errorbar(loss.index, loss["mean"], yerr=loss["std"].map(_std), **style)
        dev_ax.errorbar(dev.index, 100 * dev["mean"], yerr=100 * dev["std"].map(_std), **style)
    label, metric = cells.task_label.iloc[0], lines[0][0].main_metric
    loss_ax.set(xlabel="epoch", ylabel="training loss", title=f"{label}: training loss")
    dev_ax.set(xlabel="epoch", ylabel=_score(label, "dev", metric), title=f"{label}: dev {metric_name(metric)}")
    for ax in (loss_ax, dev_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    dev_ax.legend(fontsize=7)
    return _save(fig, out / experiment / f"learning_curves_{task}")


def plot_lr_vs_size(experiment: str, cells: pd.DataFrame, out: Path) -> list[Path]:
    """Only for sweeps over the subset size: a line needs more than one size for a (task, selector)."""
    sized = cells[cells["size"].notna() & cells.fraction.notna() & cells.lr.notna()]
    lines = [(key, g.sort_values("fraction")) for key, g in sized.groupby(["task", "selector"])
             if g.fraction.nunique() > 1]
    if not lines:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    edge_label = "LR at the grid's edge"  # one legend entry, however many lines have one
    for (_, selector), g in lines:
        ax.plot(g.fraction, g.lr, marker="o", label=f"{g.task_label.iloc[0]}: {selector_name(selector)}")
        edges = g[g.edge.astype(bool)]
        if len(edges):
            ax.scatter(edges.fraction, edges.lr, marker="^", s=60, color="red", zorder=3, label=edge_label)
            edge_label = None
    ax.set(xscale="log", yscale="log", xlabel="subset size (fraction of candidates)", ylabel="selected learning rate",
           title="Selected learning rate vs subset size")
    ax.legend(fontsize=7)
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
            written += plot_learning_curves(experiment, task, runs[runs.task == task], group, out)
        written += plot_lr_vs_size(experiment, cells, out)
    return written
