"""Display names for tables and plots, kept as data in this one place: method tags (`lora-II-r64` ->
`LoRA-II (r=64)`), selector tags and metric names. Run directories and records keep the tags; only what a table or a
figure prints goes through here. A tag without an entry prints as itself, so a new method is never hidden."""

from __future__ import annotations

import re

METHODS = {
    "full_ft": "Full FT", "full_bitfit": "BitFit", "frozen": "Frozen", "multi_head": "Multi-Head",
    "stoc_tuning": "Stochastic Tuning", "top_tuning": "Top Tuning", "random_tuning": "Random Tuning",
    "dps_mix": "DPS_Mix", "pretrained": "Pretrained",
}
SELECTORS = {
    "none": "None", "random": "Random", "bitfit": "BitFit", "magnitude": "Magnitude",
    "downstream_sqgrad": "Downstream sq-grad", "pretrain_sqgrad": "Pretrain sq-grad", "combined": "Combined",
    "diff_pruning": "Diff pruning", "diff_pruning_noretrain": "Diff pruning (no retrain)",
    "diff_pruning_gradual": "Gradual diff pruning", "diff_pruning_gradual_noretrain": "Gradual diff pruning (no retrain)",
}
# Tags built from options (conf/method/*.yaml `tag:`), first match wins; `{selector}` / `{source}` / `{inner}` are
# the display names of the captured selector tag, source task and inner method tag.
PATTERNS = (
    (r"lora-(?P<type>\w+)-r(?P<r>\d+)", "LoRA-{type} (r={r})"),
    (r"spafit-(?P<n1>-?\d+)-(?P<n2>\d+)-(?P<type>\w+)", "SPAFIT-{n1}-{n2}-{type}"),
    (r"full_ft_(?P<norm>l[12])-(?P<coefficient>.+)", "Full FT + {NORM} ({coefficient})"),
    (r"subset-(?P<sel>\w+)-f(?P<fraction>[\d.e-]+)", "{selector} subset (f={fraction})"),
    (r"subset-(?P<sel>\w+)", "{selector} subset"),
    (r"(?P<src>\w+):(?P<tag>.+)", "{inner} (from {source})"),  # transfer study: <source task>:<method tag>
)
METRICS = {
    "accuracy": "Acc", "f1": "F1", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman",
    "entity_f1": "F1", "p_at_1": "P@1",
}


def selector_name(tag) -> str:
    return SELECTORS.get(str(tag), str(tag))


def metric_name(metric) -> str:
    return METRICS.get(str(metric), str(metric))


def method_name(tag) -> str:
    """`lora-II-r64` -> `LoRA-II (r=64)`, `full_ft` -> `Full FT`, `sst2:full_ft` -> `Full FT (from sst2)`; an
    unknown tag prints as itself."""
    tag = str(tag)
    if tag in METHODS:
        return METHODS[tag]
    for pattern, template in PATTERNS:
        match = re.fullmatch(pattern, tag)
        if match:
            found = match.groupdict()
            if found.get("src") == "none" and found["tag"] == "pretrained":
                return METHODS["pretrained"]
            return template.format(**found, NORM=found.get("norm", "").upper(),
                                   selector=selector_name(found.get("sel")), source=found.get("src"),
                                   inner=method_name(found["tag"]) if "tag" in found else None)
    return tag


def column_label(task_label: str, metric) -> str:
    """A table column: `MRPC (F1)`, `RTE (Acc)`."""
    return f"{task_label} ({metric_name(metric)})" if metric else str(task_label)


def row_order(model, tag) -> tuple:
    """Rows of a table, lines of a figure: per model, full fine-tuning (every paper's reference) first, then by tag."""
    return str(model), str(tag) != "full_ft", str(tag)
