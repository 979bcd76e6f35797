"""The tests behind the claims: Welch's t-test over seeds (scipy, unequal variances), one-sided against a margin,
and its two one-sided tests (TOST) for equivalence within a margin. Scores are fractions (0.02 = two points)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"


def testable(a: Sequence[float], b: Sequence[float]) -> bool:
    """Welch needs a spread estimate on each side: two seeds at least."""
    return len(a) >= 2 and len(b) >= 2


def p_greater(a: Sequence[float], b: Sequence[float], margin: float = 0.0) -> float:
    """One-sided Welch p-value for H1: mean(a) - mean(b) > margin."""
    a = np.asarray(a, dtype=float) - margin
    b = np.asarray(b, dtype=float)
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:  # no spread on either side: the t statistic is undefined, and
        return 0.0 if a.mean() > b.mean() else 1.0  # the seeds say exactly what the difference is
    with warnings.catch_warnings():  # one constant side is fine for Welch; scipy warns about precision there
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)


def p_less(a: Sequence[float], b: Sequence[float], margin: float = 0.0) -> float:
    """One-sided Welch p-value for H1: mean(a) - mean(b) < margin."""
    return p_greater(b, a, -margin)


def compare(a: Sequence[float], b: Sequence[float], margin: float = 0.0, alpha: float = ALPHA) -> tuple[str, float, float]:
    """(verdict, p for `a - b > margin`, p for `a - b < margin`): holds / contradicted when one side is
    significant at `alpha`, inconclusive otherwise (or with fewer than two seeds on a side: NaN p-values)."""
    if not testable(a, b):
        return INCONCLUSIVE, float("nan"), float("nan")
    up, down = p_greater(a, b, margin), p_less(a, b, margin)
    if up < alpha:
        return HOLDS, up, down
    if down < alpha:
        return CONTRADICTED, up, down
    return INCONCLUSIVE, up, down


def equivalent(a: Sequence[float], b: Sequence[float], margin: float, alpha: float = ALPHA) -> tuple[str, float]:
    """TOST: (verdict, p) — holds when |mean(a) - mean(b)| < margin is shown (p = the larger one-sided p),
    contradicted when |difference| > margin is shown (p = the smaller of those two one-sided p-values)."""
    if not testable(a, b):
        return INCONCLUSIVE, float("nan")
    tost = max(p_greater(a, b, -margin), p_less(a, b, margin))
    if tost < alpha:
        return HOLDS, tost
    apart = min(p_greater(a, b, margin), p_less(a, b, -margin))
    if apart < alpha:
        return CONTRADICTED, apart
    return INCONCLUSIVE, tost


def combine(verdicts: Sequence[str]) -> str:
    """A claim made of parts: holds when every part holds, contradicted when any part is."""
    if not verdicts:
        return INCONCLUSIVE
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def p_text(p: float) -> str:
    return "n/a" if p != p else ("p<0.001" if p < 0.001 else f"p={p:.3f}")
