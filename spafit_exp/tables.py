"""`make tables`: every results.json under a root -> paper-style Markdown and LaTeX tables (+ plots).

Selection rule, per (experiment, task, method tag, model): among completed runs, the learning rate with the best
mean dev main metric over seeds. Cells report mean ± std over the seeds at that LR, in percent with one decimal
(like the papers), followed by the chosen LR. A dagger (†) marks an LR at the edge of the grid tried (more than
one LR tried): the true optimum may lie outside it. Failed and unfinished runs are counted, never hidden.
Tables never re-run anything: the records are the only input. See docs/tables.md."""

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
# Paper layouts: (task, metrics printed in the column, column label). The first metric is the one averaged.
LAYOUTS = {
    "spafit_table2": [("cola", ["mcc"], "CoLA (MCC)"), ("sst2", ["accuracy"], "SST-2"),
                      ("mrpc", ["f1", "accuracy"], "MRPC (F1/Acc)"),
                      ("stsb", ["pearson", "spearman"], "STS-B (Pearson/Spearman)"),
                      ("qqp", ["f1", "accuracy"], "QQP (F1/Acc)"), ("mnli", ["accuracy", "accuracy_mm"], "MNLI (m/mm)"),
                      ("qnli", ["accuracy"], "QNLI"), ("rte", ["accuracy"], "RTE"), ("wnli", ["accuracy"], "WNLI")],
    # MRPC F1 and STS-B Spearman: the convention of the masked-update papers this table compares against.
    "stoc_table1": [("cola", ["mcc"], "CoLA (MCC)"), ("sst2", ["accuracy"], "SST-2"), ("mrpc", ["f1"], "MRPC (F1)"),
                    ("stsb", ["spearman"], "STS-B (Spearman)"), ("qnli", ["accuracy"], "QNLI"),
                    ("rte", ["accuracy"], "RTE")],
    "subset_table1": [("conll2003", ["entity_f1"], "CoNLL (F1)"), ("qnli", ["accuracy"], "QNLI"),
                      ("sst2", ["accuracy"], "SST-2"), ("trec6", ["accuracy"], "TREC-6")],
}
# Table-3-style sweeps: rows, and what varies along the columns.
ABLATIONS = {"subset_sizes": (["task", "selector"], "size"), "lora_ranks": (["rank"], "task")}


def _num(value) -> str:
    """Compact numbers for labels: 6e-05, 16, 0.001 (no trailing .0 from pandas' float columns)."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return MISSING
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def _row(path: Path, record: dict) -> dict:
    best = (record.get("metrics") or {}).get("best") or {}
    config = record.get("config") or {}
    selector, info = config.get("selector") or {}, record.get("method_info") or {}
    row = {key: record.get(key) for key in KEYS + ["method", "selector", "lr", "seed", "status", "main_metric"]}
    row.update(path=str(path), trainable=(record.get("params") or {}).get("trainable"),
               git_sha=(record.get("provenance") or {}).get("git_sha"), best_epoch=best.get("epoch"),
               rank=(config.get("method") or {}).get("r"),
               # subset size as configured (the ablation's column), and as realised (to place it on an axis)
               size=(_num(selector["fraction"]) if selector.get("fraction") is not None
                     else f"k={selector['k']}" if selector.get("k") is not None else None),
               fraction=selector.get("fraction") if selector.get("fraction") is not None else info.get("fraction"))
    for split in ["dev", "train"]:  # dev metrics select and report; train ones feed the Gap column
        for name, value in (best.get(split) or {}).items():
            row[f"{split}.{name}"] = value
    return row


def collect(root: Path) -> pd.DataFrame:
    """One row per run. Unreadable or malformed files are reported and skipped: one bad file must not hide the
    others (records are written atomically, but disks fill up and people edit files by hand)."""
    rows = []
    for path in sorted(Path(root).rglob(RESULTS)):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            rows.append(_row(path, record))
        except (OSError, ValueError, AttributeError, TypeError, KeyError) as err:  # ValueError: bad JSON/UTF-8
            print(f"warning: skipping {path}: {type(err).__name__}: {err}", file=sys.stderr)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df[KEYS] = df[KEYS].fillna("unknown")
    df["status"] = df["status"].fillna("unknown")
    numeric = ["lr", "seed", "trainable", "rank", "fraction"] + [c for c in df if c.startswith(("dev.", "train."))]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    return df


def select_lr(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell: chosen LR, edge flag, seeds, failures, and mean/std of every metric at that LR."""
    metric_cols = [c for c in df.columns if c.startswith(("dev.", "train."))]
    seeds_per_experiment = df.groupby("experiment").seed.nunique()
    cells = []
    for key, group in df.groupby(KEYS, sort=True):
        mains = group.main_metric.dropna()
        cell = dict(zip(KEYS, key), runs=len(group), failed=int((group.status != "completed").sum()),
                    main_metric=mains.iloc[0] if len(mains) else None, selector=group.selector.iloc[0],
                    rank=group["rank"].iloc[0], size=group["size"].iloc[0], fraction=group.fraction.max(),
                    seeds_expected=int(seeds_per_experiment[key[0]]), seeds=0)
        main = f"dev.{cell['main_metric']}"
        done = group[group.status == "completed"]
        scored = done[done[main].notna() & done.lr.notna()] if main in done else done.iloc[0:0]
        if scored.empty:  # nothing to choose from: the cell prints as missing, its failures still count
            cells.append(cell)
            continue
        by_lr = scored.groupby("lr")[main].mean()
        lr = float(by_lr.idxmax())
        chosen = scored[scored.lr == lr]
        cell.update(lr=lr, edge=len(by_lr) > 1 and lr in (by_lr.index.min(), by_lr.index.max()),
                    lrs_tried=len(by_lr), seeds=len(chosen), trainable=chosen.trainable.iloc[0])
        for col in metric_cols:
            values = chosen[col].dropna()
            name = col[4:] if col.startswith("dev.") else col  # dev metrics by bare name, train ones as train.<m>
            if len(values):
                cell[f"mean.{name}"] = float(values.mean())
                cell[f"std.{name}"] = float(values.std(ddof=1))  # NaN for one seed: printed without ± then
        cells.append(cell)
    return pd.DataFrame(cells)


def fmt(cell: pd.Series | dict | None, metric: str | None, with_lr: bool = True) -> str:
    """`71.2 ± 1.0 @6e-05†`; `(n=2)` when the chosen LR has fewer seeds than the experiment ran."""
    mean = np.nan if cell is None or metric is None else cell.get(f"mean.{metric}", np.nan)
    if pd.isna(mean):
        return MISSING
    text = f"{100 * mean:.1f}"
    if pd.notna(cell.get(f"std.{metric}", np.nan)):
        text += f" ± {100 * cell[f'std.{metric}']:.1f}"
    if with_lr:
        text += f" @{_num(cell['lr'])}" + (EDGE if cell["edge"] else "")
        if cell["seeds"] < cell["seeds_expected"]:
            text += f" (n={cell['seeds']})"
    return text


def _params(cells: pd.DataFrame) -> str:
    values = cells.trainable.dropna() if "trainable" in cells else pd.Series(dtype=float)
    return f"{values.iloc[0] / 1e6:.4g}" if len(values) else MISSING


def build_table(experiment: str, cells: pd.DataFrame) -> pd.DataFrame:
    """Rows = (model, method tag); columns = tasks (paper layout when the experiment has one) + average."""
    layout = LAYOUTS.get(experiment) or [(t, [None], TASK_NAMES.get(t, t)) for t in sorted(cells.task.unique())]
    rows = []
    for (model, tag), group in cells.groupby(["model", "method_tag"], sort=True):
        by_task = {cell["task"]: cell for _, cell in group.iterrows()}
        row = {"Model": model, "Method": tag, "Params (M)": _params(group)}
        averaged = []
        for task, metrics, label in layout:
            cell = by_task.get(task)
            names = [m or (cell["main_metric"] if cell is not None else None) for m in metrics]
            row[label] = " / ".join(fmt(cell, m, with_lr=(i == 0)) for i, m in enumerate(names)) \
                if cell is not None else MISSING
            averaged.append(cell.get(f"mean.{names[0]}", np.nan) if cell is not None else np.nan)
        row["Avg."] = f"{100 * np.mean(averaged):.1f}" if not np.isnan(averaged).any() else MISSING
        gaps = [c[f"mean.train.{c['main_metric']}"] - c[f"mean.{c['main_metric']}"] for _, c in group.iterrows()
                if pd.notna(c.get(f"mean.train.{c['main_metric']}", np.nan))]
        if gaps:  # train minus dev main metric at the chosen LR, averaged over tasks (generality study)
            row["Gap"] = f"{100 * np.mean(gaps):.1f}"
        row["Failed"] = str(int(group.failed.sum()))
        rows.append(row)
    return pd.DataFrame(rows).fillna(MISSING)


def build_ablation(experiment: str, cells: pd.DataFrame) -> pd.DataFrame | None:
    """subset_sizes: rows (task, selector) x columns subset size; lora_ranks: rows rank x columns task."""
    if experiment not in ABLATIONS:
        return None
    keys, varying = ABLATIONS[experiment]
    cells = cells.assign(score=[fmt(c, c["main_metric"]) for _, c in cells.iterrows()])
    if varying == "size":  # columns in size order, whatever order the labels sort in
        cells = cells.assign(column=cells["size"].fillna(MISSING), order=cells.fraction.fillna(np.inf))
    else:
        cells = cells.assign(column=cells.task.map(lambda t: TASK_NAMES.get(t, t)), order=cells.task)
    cells = cells.assign(Rank=cells["rank"].map(_num), Task=cells.task.map(lambda t: TASK_NAMES.get(t, t)),
                         Selector=cells.selector.fillna(MISSING))
    index = [key.capitalize() for key in keys]
    cells = cells.sort_values(keys + ["order"], na_position="last")
    columns = list(dict.fromkeys(cells.sort_values("order").column))
    table = cells.pivot_table(index=index, columns="column", values="score", aggfunc="first", sort=False)
    table = table.reindex(columns=columns).fillna(MISSING)
    table["Failed"] = cells.groupby(index, sort=False).failed.sum().astype(int).astype(str)
    return table.reset_index().rename_axis(columns=None)


def footer(runs: pd.DataFrame) -> str:
    shas = sorted({str(s) for s in runs.git_sha.dropna()}) or ["unknown"]
    completed = int((runs.status == "completed").sum())
    failed = int((runs.status == "failed").sum())
    seeds = ", ".join(_num(s) for s in sorted(runs.seed.dropna().unique())) or MISSING
    return (f"{len(runs)} runs ({completed} completed, {failed} failed, {len(runs) - completed - failed} unfinished); "
            f"seeds: {seeds}; git: {', '.join(shas)}. Cells: dev score in %, mean ± std over seeds at the chosen "
            f"LR (@lr; {EDGE} = LR at the edge of the grid tried; n = seeds when fewer than the experiment's).")


def to_latex(table: pd.DataFrame, note: str) -> str:
    """A booktabs `tabular` fragment, pdflatex-safe (no raw ±, †, —)."""
    latex = table.to_latex(index=False, escape=True, column_format="l" * len(table.columns))
    tex = f"% {note}\n% needs \\usepackage{{booktabs}}\n{latex}"
    return tex.replace("±", r"$\pm$").replace(EDGE, r"$^\dagger$").replace(MISSING, "--")


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
        (out / f"{experiment}.md").write_text(markdown)
        (out / f"{experiment}.tex").write_text(to_latex(table, note))
        print(markdown)
        written[experiment] = out / f"{experiment}.md"
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="outputs", help="where the runs are (default: outputs)")
    parser.add_argument("--out", default=None, help="tables folder (default: <root>/tables)")
    parser.add_argument("--plots", default=None, help="plots folder (default: <root>/plots)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    df = collect(root) if root.is_dir() else pd.DataFrame()
    if df.empty:
        print(f"no results under {root}/")
        return 0
    out = Path(args.out) if args.out else root / "tables"
    for path in write_tables(df, out).values():
        print(f"table: {path} (+ .tex)")
    from spafit_exp.plots import write_plots  # matplotlib only once there is something to draw

    for path in write_plots(df, Path(args.plots) if args.plots else root / "plots"):
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
