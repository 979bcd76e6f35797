"""`make tables`: every results.json under a root -> paper-style Markdown and LaTeX tables (+ plots).

Selection rule, per (experiment, task, method tag, model): among completed runs, the learning rate with the best
mean dev main metric over seeds. Cells report mean ± std over the seeds at that LR, in percent with one decimal
(like the papers), followed by the chosen LR. A dagger (†) marks an LR at the edge of the grid tried (more than
one LR tried): the true optimum may lie outside it. Failed and unfinished runs are counted, never hidden.
Tables never re-run anything: the records are the only input. `--cost` adds cost columns (costs.py); tables
whose layout asks for it (or `--significance LEVEL`) mark each column's best row and its statistical ties
(significance.py). See docs/tables.md."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spafit_exp.core.errors import ConfigError
from spafit_exp.core.safe_paths import check_component
from spafit_exp.report import costs, significance
from spafit_exp.report.cells import EDGE, MISSING, MIXED, collect, fmt, lr_text, num, select_lr, sig3, task_label  # noqa: F401
from spafit_exp.report.layouts import assembled, layout_of
from spafit_exp.report.names import column_label, method_name, row_order, selector_name
from spafit_exp.report.plots import write_plots
from spafit_exp.report.table_files import FORMATS, to_latex, write  # noqa: F401 - to_latex: part of this module's API

LR_PLACES = ("cell", "column", "none")  # where `--lr` puts the chosen learning rates


@dataclass(frozen=True)
class View:
    """What a table prints besides its scores: the chosen LRs (`cell`: `@lr` after each score; `column`: one
    `LR <task>` column per task; `none`), the Gap column (where records have training-rows scores), Failed."""
    lr: str = "cell"
    gap: bool = True
    failed: bool = True


def _params(cells: pd.DataFrame) -> str:
    values = cells.trainable.dropna() if "trainable" in cells else pd.Series(dtype=float)
    return sig3(values.iloc[0] / 1e6) if len(values) else MISSING


def _marked(cells: pd.DataFrame, layout: list, level: float) -> set[tuple[str, str, str]]:
    """(model, method tag, task) of the cells printed bold: per column and model, the best row and its ties."""
    marked = set()
    for task, metrics, _ in layout:
        for model, group in cells[cells.task == task].groupby("model"):
            samples = {}
            for _, cell in group.iterrows():
                values = cell.get(f"seeds.{metrics[0] or cell['main_metric']}")
                samples[cell["method_tag"]] = values if isinstance(values, list) else []
            marked |= {(model, tag, task) for tag in significance.best_and_ties(samples, level)}
    return marked


def _rows(cells: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """(model, method tag) groups in names.row_order: full FT first within a model."""
    return sorted(cells.groupby(["model", "method_tag"]), key=lambda group: row_order(*group[0]))


def build_table(experiment: str, cells: pd.DataFrame, cost: bool = False, level: float | None = None,
                view: View = View()) -> pd.DataFrame:
    """Rows = (model, method), by display name (names.py); columns = tasks labelled with their metric (paper
    layout when the experiment has one) + average; with `cost`, the cost columns; with a significance `level`, each
    column's best row and its ties in bold; `view`: where the LRs go, Gap and Failed columns."""
    labels = dict(zip(cells.task, cells.task_label))
    mains = cells.dropna(subset=["main_metric"]).groupby("task").main_metric.first()
    layout = [(c.task, list(c.metrics), c.label) for c in layout_of(experiment).columns] or \
        [(t, [None], column_label(labels[t], mains.get(t))) for t in sorted(cells.task.unique())]
    marked = _marked(cells, layout, level) if level else set()
    rows = []
    for (model, tag), group in _rows(cells):
        by_task = {cell["task"]: cell for _, cell in group.iterrows()}
        row = {"Model": model, "Method": method_name(tag), "Params (M)": _params(group)}
        if cost:
            row.update(costs.row_costs(cells, model, tag))
        averaged, lrs = [], {}
        for task, metrics, label in layout:
            cell = by_task.get(task)
            names = [m or (cell["main_metric"] if cell is not None else None) for m in metrics]
            parts = [fmt(cell, m, with_lr=(i == 0 and view.lr == "cell"), marks=(i == 0))
                     for i, m in enumerate(names)] if cell is not None else [MISSING]
            if (model, tag, task) in marked:
                parts[0] = f"**{parts[0]}**"
            row[label] = " / ".join(parts)
            lrs[f"LR {labels.get(task) or task_label(task)}"] = lr_text(cell)
            averaged.append(cell.get(f"mean.{names[0]}", np.nan) if cell is not None else np.nan)
        row["Avg."] = f"{100 * np.mean(averaged):.1f}" if not np.isnan(averaged).any() else MISSING
        if view.lr == "column":
            row.update(lrs)
        gaps = [c[f"mean.{c['main_metric']}"] - c[f"mean.train.{c['main_metric']}"] for _, c in group.iterrows()
                if pd.notna(c.get(f"mean.train.{c['main_metric']}", np.nan))]
        if gaps and view.gap:  # the subset paper's sign: reported (test) minus train main metric at the chosen LR
            row["Gap"] = f"{100 * np.mean(gaps):.1f}"
        if view.failed:
            row["Failed"] = str(int(group.failed.sum()))
        rows.append(row)
    return pd.DataFrame(rows).fillna(MISSING)


def build_ablation(experiment: str, cells: pd.DataFrame, view: View = View()) -> pd.DataFrame | None:
    """subset_sizes: rows (task, selector) x columns subset size; lora_ranks: rows rank x columns task."""
    if layout_of(experiment).ablation is None:
        return None
    keys, varying = layout_of(experiment).ablation
    keys = list(keys)
    cells = cells.assign(score=[fmt(c, c["main_metric"], with_lr=view.lr == "cell", marks=True)
                                for _, c in cells.iterrows()])
    if varying == "size":  # columns in size order, whatever order the labels sort in
        cells = cells.assign(column=cells["size"].fillna(MISSING), order=cells.fraction.fillna(np.inf))
    else:
        cells = cells.assign(column=[column_label(label, main) for label, main in
                                     zip(cells.task_label, cells.main_metric)], order=cells.task)
    cells = cells.assign(Rank=cells["rank"].map(num), Task=cells.task_label,
                         Selector=[selector_name(s) if pd.notna(s) else MISSING for s in cells.selector])
    index = [key.capitalize() for key in keys]
    cells = cells.sort_values(keys + ["order"], na_position="last")
    columns = list(dict.fromkeys(cells.sort_values("order").column))
    table = cells.pivot_table(index=index, columns="column", values="score", aggfunc="first", sort=False)
    table = table.reindex(columns=columns).fillna(MISSING)
    if view.failed:
        table["Failed"] = cells.groupby(index, sort=False).failed.sum().astype(int).astype(str)
    return table.reset_index().rename_axis(columns=None)


class MixedRecipes(ValueError):
    """`--strict`: a cell's runs were trained with different recipes."""


def recipe_notes(cells: pd.DataFrame) -> list[str]:
    """One line per cell whose runs carry different fingerprints (naming the keys), and a count of runs whose
    records predate fingerprints."""
    notes = []
    for _, cell in cells.iterrows():
        keys = cell.get("mixed_keys")
        if isinstance(keys, list) and keys:
            notes.append(f"{MIXED} {cell['task']} / {cell['method_tag']} / {cell['model']} mixes "
                         f"{int(cell['recipes'])} recipes (differing: {', '.join(keys[:6])}"
                         f"{', …' if len(keys) > 6 else ''}): not comparable, rerun under one experiment_name.")
    unknown = int(cells.get("unknown_recipe", pd.Series(dtype=float)).fillna(0).sum())
    if unknown:
        notes.append(f"{unknown} runs have an unknown recipe (records written before config fingerprints).")
    return notes


def reported_splits(cells: pd.DataFrame) -> str:
    """Which split the cells print: dev everywhere, or the tasks scored on their labelled test set."""
    if "reported_split" not in cells:
        return "dev"
    tested = sorted({str(c["task_label"]) for _, c in cells.iterrows() if c.get("reported_split") == "test"})
    return f"dev; test for {', '.join(tested)} (epochs and LRs chosen on dev)" if tested else "dev"


def footer(runs: pd.DataFrame, cells: pd.DataFrame, view: View = View()) -> str:
    """What the table holds and how to read it, for the columns `view` prints."""
    shas = sorted({str(s) for s in runs.git_sha.dropna()}) or ["unknown"]
    completed = int((runs.status == "completed").sum())
    failed = int((runs.status == "failed").sum())
    seeds = ", ".join(num(s) for s in sorted(runs.seed.dropna().unique())) or MISSING
    where = {"cell": "@lr; ", "column": "LR <task> columns; ", "none": ""}[view.lr]
    edge = f"{EDGE} = LR at the edge of the grid tried; " if view.lr != "none" else ""
    return (f"{len(runs)} runs ({completed} completed, {failed} failed, {len(runs) - completed - failed} unfinished); "
            f"seeds: {seeds}; git: {', '.join(shas)}. Cells: score in % on {reported_splits(cells)}, mean ± std "
            f"over seeds at the chosen LR ({where}{edge}n = seeds when fewer than the experiment's)"
            + ("; Gap = reported minus training-rows score." if view.gap and any(c.startswith("mean.train.")
                                                                                 for c in cells) else "."))


def only(df: pd.DataFrame, experiments: list[str] | None) -> pd.DataFrame:
    """The runs of the named experiments (`--experiment`, also assembled tables' names, e.g. subset_table3: their
    runs are all kept); a name with no records is a ConfigError naming it, before anything is written."""
    if not experiments:
        return df
    present, tables = set(df.experiment), {name for name, _ in assembled()}
    unknown = [name for name in experiments if name not in present | tables]
    if unknown:
        raise ConfigError(f"--experiment={unknown[0]}: no records of that experiment; choose from "
                          f"{', '.join(sorted(present)) or 'none'}")
    kept = df if set(experiments) & tables else df[df.experiment.isin(experiments)]
    kept.attrs = df.attrs
    return kept


def write_tables(df: pd.DataFrame, out: Path, strict: bool = False, cost: bool = False, level: float | None = None,
                 view: View = View(), formats: tuple[str, ...] = ("md", "tex"),
                 experiments: list[str] | None = None) -> dict[str, Path]:
    """One table per experiment (`experiments`: only those, see `only`), written in `formats` (FORMATS).
    `level`: the significance level for every table (0: none); None: the layout's."""
    wanted = set(experiments or [])
    df = only(df, experiments)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    skipped = df.attrs.get("skipped", [])
    unreadable = [f"{len(skipped)} unreadable records skipped (named on stderr): {', '.join(skipped[:3])}"
                  f"{', …' if len(skipped) > 3 else ''}."] if skipped else []
    for experiment, runs in df.groupby("experiment", sort=True):
        check_component("experiment", experiment)  # a file name below: never `../x` (collect skips such records)
        if wanted and experiment not in wanted:  # kept only for an assembled table named in `experiments`
            continue
        cells = select_lr(runs)
        table = build_ablation(experiment, cells, view)
        tested = layout_of(experiment).significance if level is None else level
        if table is None:
            table = build_table(experiment, cells, cost=cost, level=tested, view=view)
        notes = recipe_notes(cells)
        if table is not None and tested and layout_of(experiment).ablation is None:
            notes.append(significance.note(tested))
        if cost and layout_of(experiment).ablation is None:
            notes.append(costs.note())
        if strict and any(n.startswith(MIXED) for n in notes):
            raise MixedRecipes(f"{experiment}: " + " ".join(n for n in notes if n.startswith(MIXED)))
        note = " ".join([footer(runs, cells, view), *notes, *unreadable])
        written[experiment] = write(out, experiment, table, note, formats)
    for name, build in assembled():  # tables built from several experiments' runs (the subset paper's Table 3)
        built = build(df) if not wanted or name in wanted else None
        if built is not None:
            written[name] = write(out, name, built[0], " ".join([built[1], *unreadable]), formats)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="outputs", help="where the runs are (default: outputs)")
    parser.add_argument("--out", default=None, help="tables folder (default: <root>/tables)")
    parser.add_argument("--plots", default=None, help="plots folder (default: <root>/plots)")
    parser.add_argument("--strict", action="store_true", help="fail when a cell mixes runs of different recipes")
    parser.add_argument("--cost", action="store_true", help="add cost columns: trainable %%, peak memory, time × FT")
    parser.add_argument("--significance", type=float, default=None, metavar="LEVEL",
                        help="mark each column's best row and the rows Welch's t-test cannot tell from it at LEVEL, "
                             "in every table (default: where the layout asks, stoc_table1 at 0.05; 0: nowhere)")
    parser.add_argument("--experiment", action="append", metavar="NAME",
                        help="only this experiment's table and plots (repeatable; default: every experiment)")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=None, dest="formats",
                        help="files to write per table: md tex csv (default: md tex)")
    parser.add_argument("--lr", choices=LR_PLACES, default="cell",
                        help="chosen LRs: after each score (cell, default), in LR columns (column), or none")
    parser.add_argument("--gap", action=argparse.BooleanOptionalAction, default=True,
                        help="the Gap column, where records carry training-rows scores (default: on)")
    parser.add_argument("--failed", action=argparse.BooleanOptionalAction, default=True,
                        help="the Failed column (default: on)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    df = collect(root) if root.is_dir() else pd.DataFrame()
    if df.empty:
        print(f"no results under {root}/")
        return 0
    out = Path(args.out) if args.out else root / "tables"
    formats = tuple(dict.fromkeys(args.formats or ("md", "tex")))
    try:
        df = only(df, args.experiment)  # before anything is written
        written = write_tables(df, out, strict=args.strict, cost=args.cost, level=args.significance,
                               view=View(args.lr, args.gap, args.failed), formats=formats, experiments=args.experiment)
    except (MixedRecipes, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written.values():
        print(f"table: {path}" + (f" (+ {', '.join('.' + f for f in formats[1:])})" if len(formats) > 1 else ""))
    computed = [(experiment, runs, select_lr(runs)) for experiment, runs in df.groupby("experiment")
                if not args.experiment or experiment in args.experiment]
    for path in write_plots(computed, Path(args.plots) if args.plots else root / "plots"):
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
