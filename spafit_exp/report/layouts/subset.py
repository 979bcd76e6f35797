"""Subset paper: Table 1 (selectors x tasks), the subset-size sweep (Figures 2-4), the LoRA rank sweep (Table 9) and
Table 3 (generality: Table 1's variants on their primary tasks, under the MLM probe and on secondary tasks)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spafit_exp.report.cells import KEYS, MISSING, select_lr
from spafit_exp.report.layouts import Column, Layout, register
from spafit_exp.report.names import method_name

register("subset_table1", Layout(columns=(
    Column("conll2003", ("entity_f1",), "CoNLL (F1)"), Column("qnli", ("accuracy",), "QNLI (Acc)"),
    Column("sst2", ("accuracy",), "SST-2 (Acc)"), Column("trec6", ("accuracy",), "TREC-6 (Acc)"),
)))
register("subset_sizes", Layout(ablation=(("task", "selector"), "size")))
register("lora_ranks", Layout(ablation=(("rank",), "task")))


# Table 3 (section 4, generality): one row per variant of Table 1 (its method tag), every column a mean ± std over
# runs of a difference, in percentage points, pooled over seeds and tasks as the paper pools them (its ± of full
# FT's 0.0000 Prim. is the spread of full FT's own runs around their per-task means).
PRIMARY, REFERENCE = "subset_table1", "full_ft"  # the primary experiment and the row its differences are taken to
PRETRAINED = "none:pretrained"  # <task>:<method tag> of the studies' records of the pretrained encoder
COLUMNS = ("Prim.", "MLM", "Gap", "Sec.", "Sec. (decoder)")


def _metric(rows: pd.DataFrame, prefix: str = "", split: str | None = None) -> list[float]:
    """Per run: `<split>.<prefix><main metric>`, the split being the run's reported one unless given."""
    return [row.get(f"{split or row['reported_split']}.{prefix}{row['main_metric']}", np.nan)
            for _, row in rows.iterrows()]


def _chosen(runs: pd.DataFrame) -> pd.DataFrame:
    """The completed runs at their cell's chosen learning rate (the tables' rule, select_lr), with `score` (main
    metric on the reported split: test for CoNLL-2003 and TREC-6), `train` and `decoder` (transfer records)."""
    cells = select_lr(runs) if not runs.empty else pd.DataFrame()
    if "lr" not in cells:
        return runs.iloc[0:0].assign(score=np.nan, train=np.nan, decoder=np.nan)
    done = runs[runs.status == "completed"].merge(cells[cells["lr"].notna()][KEYS + ["lr"]], on=KEYS + ["lr"])
    return done.assign(score=_metric(done), train=_metric(done, split="train"), decoder=_metric(done, "decoder_"))


def _minus(rows: pd.DataFrame, reference: pd.DataFrame, column: str, by: list[str]) -> pd.DataFrame:
    """`rows` with `value` = its `column` minus the mean `column` of the `reference` runs with the same `by`."""
    means = reference.groupby(by)[column].mean().rename("reference").reset_index()
    rows = rows.merge(means, on=by, how="left") if len(means) else rows.assign(reference=np.nan)
    return rows.assign(value=rows[column] - rows.reference)


def _cell(values: pd.DataFrame, units: int) -> tuple[str, float]:
    """`-5.84 ± 1.72` (percentage points) and the mean; `(k/N)` when the row has k of the N tasks (or primary →
    secondary pairs) the column has in its fullest row."""
    values = values.dropna(subset=["value"])
    if values.empty:
        return MISSING, np.nan
    mean, std = values.value.mean(), values.value.std(ddof=1)
    text = f"{round(100 * mean, 2) + 0.0:.2f}" + (f" ± {100 * std:.2f}" if len(values) > 1 else "")
    have = values.unit.nunique()
    return text + (f" ({have}/{units})" if have < units else ""), mean


def generality_table(runs: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    present = set(runs.experiment)
    if PRIMARY not in present or not present & {"mlm_probe", "transfer"}:
        return None
    primary = _chosen(runs[runs.experiment == PRIMARY]).assign(unit=lambda f: f.task, variant=lambda f: f.method_tag)
    if primary.empty:  # no finished Table 1 run: no rows
        return None
    probes = runs[(runs.experiment == "mlm_probe") & (runs.status == "completed")]
    probes = probes.assign(score=probes.get("dev.p_at_1", np.nan))
    pretrained_probe = probes[probes.task + ":" + probes.method_tag == PRETRAINED]
    # the probe of a Table 1 encoder: at the learning rate its cell chose, every seed
    encoders = probes.merge(primary[["model", "task", "method_tag", "lr"]].drop_duplicates(), on=KEYS[1:] + ["lr"])
    transfers = _chosen(runs[runs.experiment == "transfer"])
    source = transfers.method_tag.str.split(":", n=1).str
    transfers = transfers.assign(variant=source[-1], unit=source[0] + " -> " + transfers.task)
    pretrained_transfer = transfers[transfers.method_tag == PRETRAINED]
    transfers = transfers[transfers.method_tag != PRETRAINED]
    columns = dict(zip(COLUMNS, (
        _minus(primary, primary[primary.method_tag == REFERENCE], "score", ["model", "task"]),
        _minus(encoders.assign(unit=encoders.task, variant=encoders.method_tag), pretrained_probe, "score", ["model"]),
        primary.assign(value=primary.score - primary.train),
        _minus(transfers, pretrained_transfer, "score", ["model", "task"]),
        _minus(transfers, pretrained_transfer, "decoder", ["model", "task"]))))
    units = {name: int(f.dropna(subset=["value"]).groupby(["model", "variant"]).unit.nunique().max() or 0)
             if f.value.notna().any() else 0 for name, f in columns.items()}
    rows, means = [], []
    for model, variants in primary.groupby("model", sort=True):
        for variant in sorted(set(variants.variant), key=lambda tag: (tag != REFERENCE, tag)):
            row, mean = {"Model": model, "Method": method_name(variant)}, {}
            for name, frame in columns.items():
                row[name], mean[name] = _cell(frame[(frame.model == model) & (frame.variant == variant)], units[name])
            rows.append(row)
            means.append({"Model": model, **mean})
    table, means = pd.DataFrame(rows), pd.DataFrame(means)
    for name in COLUMNS:  # the best row of each column and model in bold, as the paper marks it
        best = means.groupby("Model")[name].transform("max")
        table.loc[means[name].notna() & (means[name] == best), name] = "**" + table[name] + "**"
    note = (f"Subset paper Table 3 from {PRIMARY} ({len(primary)} runs at their chosen LRs), mlm_probe "
            f"({len(encoders)} probes of them, {len(pretrained_probe)} of the pretrained encoder) and transfer "
            f"({len(transfers)} runs, {len(pretrained_transfer)} from the pretrained encoder). Differences in "
            f"percentage points, mean ± std over the row's runs (seeds × tasks): Prim. = reported score minus "
            f"{REFERENCE}'s mean on the task; MLM = probe P@1 minus the pretrained encoder's; Gap = reported minus "
            "training-rows score; Sec. / Sec. (decoder) = the full fine-tune / decoder-only score on a secondary "
            f"task minus that of the pretrained encoder ({PRETRAINED}); (k/N) = k of the N tasks (primary -> "
            "secondary pairs) of the column's fullest row; bold = each column's best.")
    return table, note


register("subset_table3", Layout(build=generality_table))
