"""Figures from the results frame (tables.collect): score vs trainable parameters with the Pareto front,
per-method LR curves, and the selected LR vs subset size (subset paper, Figure 2). PNG + PDF each."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from spafit_exp.tables import select_lr  # noqa: E402


def _save(fig, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    outs = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for out in outs:
        fig.savefig(out, dpi=150)
    plt.close(fig)
    return outs


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by one with fewer (or equal) parameters and a higher score."""
    front, best = [], float("-inf")
    for params, score in sorted(points):
        if score > best:
            front.append((params, score))
            best = score
    return front


def write_plots(df: pd.DataFrame, out: Path) -> list[Path]:
    written = []
    for experiment, runs in df.groupby("experiment"):
        cells = select_lr(runs)
        cells = cells[cells.get("lr").notna()] if "lr" in cells else cells.iloc[0:0]
        for task, group in cells.groupby("task"):
            main = group.main_metric.iloc[0]
            points = [(float(r.trainable), 100 * float(r[f"mean.{main}"])) for _, r in group.iterrows()
                      if pd.notna(r.trainable) and pd.notna(r.get(f"mean.{main}"))]
            if not points:
                continue
            fig, ax = plt.subplots(figsize=(5, 3.5))
            for _, r in group.iterrows():
                if pd.notna(r.trainable) and pd.notna(r.get(f"mean.{main}")):
                    ax.scatter(r.trainable, 100 * r[f"mean.{main}"], label=r.method_tag)
            front = pareto_front(points)
            ax.plot([p for p, _ in front], [s for _, s in front], "k--", linewidth=1, label="Pareto front")
            ax.set(xscale="log", xlabel="trainable parameters", ylabel=f"dev {main} (%)", title=f"{experiment}: {task}")
            ax.legend(fontsize=6)
            written += _save(fig, out / experiment / f"pareto_{task}")

            fig, ax = plt.subplots(figsize=(5, 3.5))
            done = runs[(runs.task == task) & (runs.status == "completed")]
            for tag, g in done.groupby("method_tag"):
                curve = g.groupby("lr")[f"dev.{main}"].mean()
                ax.plot(curve.index, 100 * curve.values, marker="o", label=tag)
            ax.set(xscale="log", xlabel="learning rate", ylabel=f"dev {main} (%)", title=f"{experiment}: {task}")
            ax.legend(fontsize=6)
            written += _save(fig, out / experiment / f"lr_curves_{task}")

        sized = cells[cells.fraction.notna()] if "fraction" in cells else cells.iloc[0:0]
        if len(sized):
            fig, ax = plt.subplots(figsize=(5, 3.5))
            for (task, selector), g in sized.groupby(["task", "selector"]):
                g = g.sort_values("fraction")
                ax.plot(g.fraction, g.lr, marker="o", label=f"{task} {selector}")
                edges = g[g.edge.astype(bool)]
                ax.scatter(edges.fraction, edges.lr, marker="^", color="red", zorder=3)
            ax.set(xscale="log", yscale="log", xlabel="subset size (fraction)", ylabel="selected LR",
                   title=f"{experiment}: selected LR (red: grid edge)")
            ax.legend(fontsize=6)
            written += _save(fig, out / experiment / "lr_vs_subset_size")
    return written
