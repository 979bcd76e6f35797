"""Which rows of a table column are not significantly different from its best row.

Rule (docs/tables.md): per column and per model, the best row is the one with the highest mean score (the
column's first metric, over the seeds at that row's chosen LR). Another row ties with it when Welch's two-sided
t-test over the two rows' per-seed scores (`scipy.stats.ttest_ind(equal_var=False)`) gives p ≥ the level (0.05
unless stated): the seeds cannot tell them apart. The best row and its ties are marked (bold in Markdown and
LaTeX). A row with fewer than two seeds cannot be tested and is never a tie; when the best row has fewer than two
seeds, it alone is marked. Two rows whose seeds all score the same (no spread) tie exactly when their means are
equal (the t statistic is undefined there)."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence

import numpy as np
from scipy import stats

DEFAULT_LEVEL = 0.05


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) for equal means."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:  # scipy returns NaN: no spread on either side
        return 1.0 if a.mean() == b.mean() else 0.0
    with warnings.catch_warnings():  # one constant side is fine for Welch (the other's variance carries it), but
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns about precision there
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def best_and_ties(samples: dict[Hashable, Sequence[float]], level: float = DEFAULT_LEVEL) -> set[Hashable]:
    """The keys to mark in one column: the best (highest mean) and every key not significantly different from it."""
    scored = {key: list(values) for key, values in samples.items() if len(values)}
    if not scored:
        return set()
    best = max(scored, key=lambda key: float(np.mean(scored[key])))
    marked = {best}
    if len(scored[best]) < 2:
        return marked
    for key, values in scored.items():
        if key != best and len(values) >= 2 and welch_p(scored[best], values) >= level:
            marked.add(key)
    return marked


def note(level: float) -> str:
    return (f"Bold: per column and model, the best mean and every row not significantly different from it "
            f"(Welch's t-test over seeds at each row's chosen LR, two-sided, p ≥ {level:g}; rows with one seed "
            f"are not tested).")
