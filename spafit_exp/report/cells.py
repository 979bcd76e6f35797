"""Records -> cells: every results.json under a root as one row per run (`collect`), then one cell per
(experiment, task, method tag, model) at the learning rate with the best mean dev main metric over seeds
(`select_lr`), and the cell's printed form (`fmt`). Tables and plots both start from these cells."""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from spafit_exp import CONF_DIR
from spafit_exp.core import fingerprint
from spafit_exp.core.record import RESULTS, CorruptRecord, Record, read
from spafit_exp.core.safe_paths import is_within

KEYS = ["experiment", "task", "method_tag", "model"]
EDGE = "†"
MISSING = "—"
MIXED = "‡"  # the cell's runs carry different recipes (fingerprints)
SPLITS = ("dev.", "test.", "train.")


def num(value) -> str:
    """Compact numbers for labels: 6e-05, 16, 0.001 (no trailing .0 from pandas' float columns)."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return MISSING
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def sig3(value) -> str:
    """Counts and ratios in tables: three significant digits, never an exponent (22.7, 0.0265, 335)."""
    if value is None or pd.isna(value):
        return MISSING
    return np.format_float_positional(float(value), precision=3, unique=False, fractional=False, trim="-")


@functools.cache
def task_label(task: str) -> str:
    """A task's column label: `display:` of its YAML (records written before labels were kept), else its name."""
    path = CONF_DIR / "task" / f"{task}.yaml"
    return str(OmegaConf.load(path).get("display") or task) if path.is_file() else task


def _finite(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) else np.nan


def curve(record: Record) -> list[tuple[float, float, float]]:
    """(epoch, dev main metric, mean training loss over the epoch's logged steps) per evaluated epoch, for the
    learning curves. `metrics.epochs` and `train.losses` are not part of the checked record shape (record_check):
    anything malformed reads as missing (NaN), never as an error."""
    epochs = record.section("metrics").get("epochs")
    losses = record.section("train").get("losses")
    main = record.main_metric
    logged = [(_finite(p[0]), _finite(p[1])) for p in losses if isinstance(p, (list, tuple)) and len(p) == 2] \
        if isinstance(losses, list) else []
    points, previous = [], -np.inf
    for row in epochs if isinstance(epochs, list) else []:
        if not isinstance(row, dict) or np.isnan(_finite(row.get("epoch"))):
            continue
        dev = row.get("dev") if isinstance(row.get("dev"), dict) else {}
        step = _finite(row.get("step"))
        window = [loss for at, loss in logged if previous < at <= step and not np.isnan(loss)]
        loss = float(np.mean(window)) if window else _finite(row.get("train_loss"))  # older: the last window's
        points.append((_finite(row["epoch"]), _finite(dev.get(main)), loss))
        previous = step if not np.isnan(step) else previous
    return points


def _row(path: Path, record: Record) -> dict:
    best, config = record.best, record.section("config")
    selector, info = config.get("selector") or {}, record.section("method_info")
    row = {key: getattr(record, key) for key in KEYS + ["method", "selector", "lr", "seed", "status", "main_metric"]}
    row["task_label"] = (config.get("task") or {}).get("display") or task_label(str(record.task))
    row.update(path=str(path), trainable=record.section("params").get("trainable"),
               git_sha=record.section("provenance").get("git_sha"), best_epoch=best.get("epoch"),
               rank=(config.get("method") or {}).get("r"),
               # subset size as configured (the ablation's column), and as realised (to place it on an axis)
               size=(num(selector["fraction"]) if selector.get("fraction") is not None
                     else f"k={selector['k']}" if selector.get("k") is not None else None),
               fraction=selector.get("fraction") if selector.get("fraction") is not None else info.get("fraction"))
    printed = record.settings
    row["recipe_settings"] = fingerprint.recipe(printed) if printed else None  # None: written before fingerprints
    row["recipe"] = fingerprint.digest(row["recipe_settings"]) if printed else None
    row["reported_split"] = record.reported_split
    row["curve"] = curve(record)
    memory, timing = record.section("memory"), record.section("timing")
    row.update(total=record.section("params").get("total"),  # cost columns: what the run needed
               peak_bytes=memory.get("cuda_max_allocated_bytes") or memory.get("peak_bytes"),  # GPU peak on a GPU
               train_s=timing.get("train_s") or timing.get("wall_s"))
    for split in ["dev", "test", "train"]:  # dev selects; the reported split (dev or test) prints; train: the Gap
        for name, value in record.scores(split).items():
            row[f"{split}.{name}"] = value
    return row


def _nonfinite(path: Path, record: Record) -> bool:
    """A completed run with a non-finite score (NaN, ±Infinity) counts as failed: such a score would otherwise
    win (or poison) the learning-rate choice and print as `inf`."""
    bad = [f"{split} {name}={score}" for split in ("dev", "test", "train") for name, score in
           record.scores(split).items() if isinstance(score, float) and not math.isfinite(score)]
    if not bad or not record.completed:
        return False
    print(f"warning: {path}: non-finite score ({', '.join(bad)}): counted as a failed run", file=sys.stderr)
    return True


def collect(root: Path) -> pd.DataFrame:
    """One row per run. Unreadable or malformed records (record.read: no plain file, bad JSON, a field of the
    wrong type or a path-like identity field) are reported and skipped, one warning each: one bad file must not
    hide the others (records are written atomically, but disks fill up and people edit files by hand)."""
    rows, skipped = [], []
    for path in sorted(Path(root).rglob(RESULTS)):
        try:
            if not is_within(path.parent, Path(root)):
                raise CorruptRecord(f"{path}: resolves outside {root} (a symbolic link?)")
            record = read(path.parent)
        except CorruptRecord as err:
            print(f"warning: skipping {err}", file=sys.stderr)
            skipped.append(str(path))
            continue
        if record is not None:  # None: removed since the folder was listed
            rows.append(_row(path, record) | ({"status": "failed"} if _nonfinite(path, record) else {}))
    df = pd.DataFrame(rows)
    df.attrs["skipped"] = skipped  # unreadable records: every table's footer counts them
    if df.empty:
        return df
    df[KEYS] = df[KEYS].fillna("unknown")
    df["status"] = df["status"].fillna("unknown")
    numeric = ["lr", "seed", "trainable", "total", "peak_bytes", "train_s", "rank", "fraction"] + \
        [c for c in df if c.startswith(SPLITS)]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
    return df


def select_lr(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell: chosen LR (by the mean dev main metric), edge flag, seeds, failures, and mean/std of every metric
    at that LR. The reported split's metrics go by bare name (`mean.accuracy`: test where the task reports a
    labelled test set, else dev); the others keep their prefix (`mean.dev.accuracy`, `mean.train.accuracy`)."""
    metric_cols = [c for c in df.columns if c.startswith(SPLITS)]
    seeds_per_experiment = df.groupby("experiment").seed.nunique()
    cells = []
    for key, group in df.groupby(KEYS, sort=True):
        mains = group.main_metric.dropna()
        cell = dict(zip(KEYS, key), runs=len(group), failed=int((group.status != "completed").sum()),
                    main_metric=mains.iloc[0] if len(mains) else None, selector=group.selector.iloc[0],
                    task_label=group.task_label.iloc[0],
                    rank=group["rank"].iloc[0], size=group["size"].iloc[0], fraction=group.fraction.max(),
                    seeds_expected=int(seeds_per_experiment[key[0]]), seeds=0)
        recipes = group.dropna(subset=["recipe"]).drop_duplicates("recipe")
        cell.update(recipes=len(recipes), unknown_recipe=int(group.recipe.isna().sum()), mixed_keys=[])
        if len(recipes) > 1:  # never averaged silently: marked, and the footer names what differs
            first = recipes.recipe_settings.iloc[0]
            cell["mixed_keys"] = sorted({k for other in recipes.recipe_settings.iloc[1:]
                                         for k, _, _ in fingerprint.differences(first, other)})
        main = f"dev.{cell['main_metric']}"
        done = group[group.status == "completed"]
        scored = done[done[main].notna() & done.lr.notna()] if main in done else done.iloc[0:0]
        if scored.empty:  # nothing to choose from: the cell prints as missing, its failures still count
            cells.append(cell)
            continue
        by_lr = scored.groupby("lr")[main].mean()
        lr = float(by_lr.idxmax())
        chosen = scored[scored.lr == lr]
        reported = chosen.reported_split.iloc[0]
        # every rate scoring the same (all at the majority class, say) is a tie: no rate is best, none at an edge
        tie = len(by_lr) > 1 and bool(np.isclose(by_lr.min(), by_lr.max(), rtol=1e-9, atol=1e-12))
        cell.update(lr=lr, tie=tie, edge=not tie and len(by_lr) > 1 and lr in (by_lr.index.min(), by_lr.index.max()),
                    lrs_tried=len(by_lr), seeds=len(chosen), trainable=chosen.trainable.iloc[0],
                    reported_split=reported, total=chosen.total.iloc[0], peak_bytes=chosen.peak_bytes.max(),
                    train_s=chosen.train_s.mean())
        for col in metric_cols:
            values = chosen[col].dropna()
            split, bare = col.split(".", 1)
            name = bare if split == reported else col
            if len(values):
                cell[f"mean.{name}"] = float(values.mean())
                cell[f"std.{name}"] = float(values.std(ddof=1))  # NaN for one seed: printed without ± then
                cell[f"seeds.{name}"] = values.tolist()  # per seed: the significance test's samples
        cells.append(cell)
    return pd.DataFrame(cells)


def lr_text(cell: pd.Series | dict | None) -> str:
    """The chosen LR as a table prints it: `6e-05†` (edge of the grid tried)."""
    if cell is None or pd.isna(cell.get("lr", np.nan)):
        return MISSING
    return num(cell["lr"]) + (EDGE if cell["edge"] else "")


def fmt(cell: pd.Series | dict | None, metric: str | None, with_lr: bool = True, marks: bool | None = None) -> str:
    """`71.2 ± 1.0 @6e-05†`; `(n=2)` when the chosen LR has fewer seeds than the experiment ran. `marks` (default:
    as `with_lr`): the cell's own marks (‡, n=) without the LR, for tables that print LRs elsewhere or not at all."""
    mean = np.nan if cell is None or metric is None else cell.get(f"mean.{metric}", np.nan)
    if pd.isna(mean):
        return MISSING
    text = f"{100 * mean:.1f}"
    if pd.notna(cell.get(f"std.{metric}", np.nan)):
        text += f" ± {100 * cell[f'std.{metric}']:.1f}"
    if with_lr:
        text += f" @{lr_text(cell)}"
    if with_lr if marks is None else marks:
        if cell.get("mixed_keys"):
            text += MIXED
        if cell["seeds"] < cell["seeds_expected"]:
            text += f" (n={cell['seeds']})"
    return text
