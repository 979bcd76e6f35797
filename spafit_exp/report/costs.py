"""Cost columns of a table (`make tables ARGS=--cost`): what each row's runs needed, from their records.

  Trainable (%)   100 × params.trainable / params.total, from the row's first task (as `Params (M)`)
  Peak mem (GiB)  the largest peak over the row's runs at their chosen LRs: `memory.cuda_max_allocated_bytes` for
                  runs on a GPU, else `memory.peak_bytes` (peak resident memory of the process)
  Time (× FT)     per task, the mean training time of the runs at the chosen LR (`timing.train_s`; older records:
                  `timing.wall_s`) divided by full fine-tuning's (method tag `full_ft`, same model and task);
                  the geometric mean of these ratios over the tasks both rows have. `—` without a full-FT row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spafit_exp.report.cells import MISSING, sig3

REFERENCE = "full_ft"  # the row every time is relative to
COLUMNS = ("Trainable (%)", "Peak mem (GiB)", "Time (× FT)")


def _first(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.iloc[0]) if len(values) else np.nan


def row_costs(cells: pd.DataFrame, model: str, tag: str) -> dict[str, str]:
    """The cost columns of one (model, method tag) row of a table built from `cells` (cells.select_lr)."""
    group = cells[(cells.model == model) & (cells.method_tag == tag)].sort_values("task")
    trainable, total = _first(group.get("trainable", pd.Series(dtype=float))), _first(group.get("total", pd.Series(dtype=float)))
    peak = group.get("peak_bytes", pd.Series(dtype=float)).max()
    reference = cells[(cells.model == model) & (cells.method_tag == REFERENCE)].set_index("task")
    ratios = []
    for _, cell in group.iterrows():
        base = reference.train_s.get(cell["task"], np.nan) if "train_s" in reference else np.nan
        if pd.notna(cell.get("train_s", np.nan)) and pd.notna(base) and base > 0:
            ratios.append(cell["train_s"] / base)
    return {
        COLUMNS[0]: sig3(100 * trainable / total) if total and pd.notna(trainable) and pd.notna(total) else MISSING,
        COLUMNS[1]: f"{peak / 2**30:.2f}" if pd.notna(peak) else MISSING,
        COLUMNS[2]: f"{float(np.exp(np.mean(np.log(ratios)))):.2f}" if ratios else MISSING,
    }


def note() -> str:
    return ("Costs: Trainable (%) of all parameters; Peak mem (GiB): largest peak over the row's runs at the chosen "
            "LRs (GPU allocator on a GPU, else process RSS); Time (× FT): training time relative to full FT of the "
            "same model, geometric mean over tasks.")
