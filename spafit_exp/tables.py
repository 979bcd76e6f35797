"""`make tables`: every results.json under a root -> paper-style Markdown and LaTeX tables (+ plots).

Selection rule, per (experiment, task, method tag, model): among completed runs, the learning rate with the best
mean dev main metric over seeds; cells report mean ± std over the seeds at that LR, in percent with one decimal
(like the papers), with the LR chosen. A dagger (†) marks an LR at the edge of the grid tried (more than one LR
tried): the true optimum may lie outside it. Failed and unfinished runs are counted in the footer, never hidden.
Tables never re-run anything: the records are the only input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from spafit_exp.results import RESULTS

KEYS = ["experiment", "task", "method_tag", "model"]
EDGE = "†"
MISSING = "—"
TASK_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
              "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "trec6": "TREC-6", "conll2003": "CoNLL"}
# Paper layouts: task columns, and for each the metrics printed (first = the one averaged).
LAYOUTS = {
    "spafit_table2": [("cola", ["mcc"]), ("sst2", ["accuracy"]), ("mrpc", ["f1", "accuracy"]),
                      ("stsb", ["pearson", "spearman"]), ("qqp", ["f1", "accuracy"]), ("mnli", ["accuracy", "accuracy_mm"]),
                      ("qnli", ["accuracy"]), ("rte", ["accuracy"]), ("wnli", ["accuracy"])],
    "stoc_table1": [("cola", ["mcc"]), ("sst2", ["accuracy"]), ("mrpc", ["f1"]), ("stsb", ["spearman"]),
                    ("qnli", ["accuracy"]), ("rte", ["accuracy"])],
    "subset_table1": [("conll2003", ["entity_f1"]), ("qnli", ["accuracy"]), ("sst2", ["accuracy"]),
                      ("trec6", ["accuracy"])],
}


def collect(root: Path) -> pd.DataFrame:
    """One row per run; unreadable files are reported and skipped."""
    rows = []
    for path in sorted(Path(root).rglob(RESULTS)):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"warning: skipping {path}: {err}", file=sys.stderr)
            continue
        best = (record.get("metrics") or {}).get("best") or {}
        config = record.get("config") or {}
        row = {key: record.get(key) for key in ["experiment", "task", "method", "method_tag", "selector", "model",
                                                   "lr", "seed", "status", "main_metric"]}
        row.update(path=str(path), trainable=(record.get("params") or {}).get("trainable"),
                   git_sha=(record.get("provenance") or {}).get("git_sha"), best_epoch=best.get("epoch"),
                   fraction=(config.get("selector") or {}).get("fraction"),
                   k=(record.get("method_info") or {}).get("k"), rank=(config.get("method") or {}).get("r"))
        for name, value in (best.get("dev") or {}).items():
            row[f"dev.{name}"] = value
        for name, value in (best.get("train") or {}).items():
            row[f"train.{name}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def select_lr(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell: chosen LR, edge flag, seeds, failures, and mean/std of every dev metric at that LR."""
    metric_cols = [c for c in df.columns if c.startswith(("dev.", "train."))]
    cells = []
    for key, group in df.groupby(KEYS, dropna=False, sort=True):
        done = group[group.status == "completed"]
        cell = dict(zip(KEYS, key))
        cell.update(runs=len(group), failed=int((group.status != "completed").sum()), lrs=sorted(group.lr.unique()))
        if done.empty:
            cells.append(cell)
            continue
        main = "dev." + done.main_metric.iloc[0]
        by_lr = done.groupby("lr")[main].mean()
        lr = float(by_lr.idxmax()) if by_lr.notna().any() else float(by_lr.index[0])
        chosen = done[done.lr == lr]
        tried = sorted(done.lr.unique())
        cell.update(lr=lr, edge=len(tried) > 1 and lr in (tried[0], tried[-1]), seeds=len(chosen),
                    main_metric=main[4:], trainable=chosen.trainable.iloc[0], fraction=chosen.fraction.iloc[0],
                    rank=chosen["rank"].iloc[0], selector=chosen.selector.iloc[0])
        for col in metric_cols:
            values = chosen[col].dropna()
            name = col[4:] if col.startswith("dev.") else col  # dev metrics by bare name, train ones as train.<m>
            if len(values):
                cell[f"mean.{name}"] = float(values.mean())
                cell[f"std.{name}"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        cells.append(cell)
    return pd.DataFrame(cells)


def fmt(cell: pd.Series | None, metric: str, with_lr: bool = True) -> str:
    if cell is None or pd.isna(cell.get(f"mean.{metric}", np.nan)):
        return MISSING
    text = f"{100 * cell[f'mean.{metric}']:.1f} ± {100 * cell[f'std.{metric}']:.1f}"
    if with_lr:
        text += f" @{cell['lr']:g}" + (EDGE if cell["edge"] else "")
    return text


def _params(cells: pd.DataFrame) -> str:
    values = cells.trainable.dropna()
    return f"{values.iloc[0] / 1e6:.4g}" if len(values) else MISSING


def build_table(experiment: str, cells: pd.DataFrame) -> pd.DataFrame:
    """Rows = (model, method tag); columns = tasks (paper layout when the experiment has one) + average."""
    layout = LAYOUTS.get(experiment) or [(t, [None]) for t in sorted(cells.task.unique())]
    rows = []
    for (model, tag), group in cells.groupby(["model", "method_tag"], sort=True):
        by_task = {row.task: row for _, row in group.iterrows()}
        row = {"Model": model, "Method": tag, "Params (M)": _params(group)}
        averaged = []
        for task, metrics in layout:
            cell = by_task.get(task)
            names = [m or (cell["main_metric"] if cell is not None and "main_metric" in cell else None) for m in metrics]
            label = TASK_NAMES.get(task, task) + ("" if metrics == [None] else f" ({'/'.join(names)})")
            row[label] = " / ".join(fmt(cell, m, with_lr=(i == 0)) for i, m in enumerate(names)) if cell is not None \
                else MISSING
            value = cell.get(f"mean.{names[0]}", np.nan) if cell is not None else np.nan
            averaged.append(value)
        row["Avg."] = f"{100 * np.mean(averaged):.1f}" if averaged and not np.isnan(averaged).any() else MISSING
        gaps = [c[f"mean.train.{c['main_metric']}"] - c[f"mean.{c['main_metric']}"] for _, c in group.iterrows()
                if isinstance(c.get("main_metric"), str) and pd.notna(c.get(f"mean.train.{c['main_metric']}", np.nan))]
        if gaps:  # train minus dev main metric at the chosen LR, averaged over tasks (generality study)
            row["Gap"] = f"{100 * np.mean(gaps):.1f}"
        row["Failed"] = str(int(group.failed.sum()))
        rows.append(row)
    return pd.DataFrame(rows)


def build_ablation(experiment: str, cells: pd.DataFrame) -> pd.DataFrame | None:
    """subset_sizes: rows selector x columns subset fraction; lora_ranks: rows rank x columns task."""
    if experiment == "subset_sizes":
        index, columns = "selector", "fraction"
    elif experiment == "lora_ranks":
        index, columns = "rank", "task"
    else:
        return None
    table = {}
    for _, cell in cells.iterrows():
        metric = cell.get("main_metric")
        key = (cell["task"], cell[index]) if columns == "fraction" else (cell[index],)
        table.setdefault(key, {})[f"{cell[columns]:g}" if columns == "fraction" else TASK_NAMES.get(cell[columns],
                                  cell[columns])] = fmt(cell, metric) if isinstance(metric, str) else MISSING
    names = ["Task", "Selector"] if columns == "fraction" else ["Rank"]
    frame = pd.DataFrame([dict(zip(names, k)) | v for k, v in sorted(table.items(), key=lambda kv: str(kv[0]))])
    return frame.fillna(MISSING)


def footer(runs: pd.DataFrame) -> str:
    shas = sorted({str(s) for s in runs.git_sha.dropna()}) or ["unknown"]
    failed = int((runs.status == "failed").sum())
    unfinished = int((~runs.status.isin(["completed", "failed"])).sum())
    return (f"{len(runs)} runs ({int((runs.status == 'completed').sum())} completed, {failed} failed, {unfinished} "
            f"unfinished); seeds: {', '.join(str(s) for s in sorted(runs.seed.dropna().unique()))}; "
            f"git: {', '.join(shas)}. Cells: dev score in %, mean ± std over seeds at the chosen LR (@lr; "
            f"{EDGE} = LR at the edge of the grid tried).")


def write_tables(df: pd.DataFrame, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for experiment, runs in df.groupby("experiment", sort=True):
        cells = select_lr(runs)
        table = build_ablation(experiment, cells)
        if table is None:
            table = build_table(experiment, cells)
        note = footer(runs)
        markdown = f"## {experiment}\n\n{table.to_markdown(index=False, disable_numparse=True)}\n\n{note}\n"
        latex = table.to_latex(index=False, escape=True, column_format="l" * len(table.columns))
        (out / f"{experiment}.md").write_text(markdown)
        tex = f"% {note}\n% needs \\usepackage{{booktabs}}\n{latex}"
        tex = tex.replace("±", r"$\pm$").replace(EDGE, r"$^\dagger$").replace(MISSING, "--")  # pdflatex-safe
        (out / f"{experiment}.tex").write_text(tex)
        print(markdown)
        written[experiment] = out / f"{experiment}.md"
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="outputs", help="where the runs are")
    parser.add_argument("--out", default=None, help="tables folder (default: <root>/tables)")
    parser.add_argument("--plots", default=None, help="plots folder (default: <root>/plots)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    df = collect(root) if root.is_dir() else pd.DataFrame()
    if df.empty:
        print(f"no results under {root}/")
        return 0
    write_tables(df, Path(args.out) if args.out else root / "tables")
    from spafit_exp.plots import write_plots

    for path in write_plots(df, Path(args.plots) if args.plots else root / "plots"):
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
