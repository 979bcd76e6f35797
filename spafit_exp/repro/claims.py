"""A paper's claims about its main table, each a check over our seeds with a stated test (stats.py, α = 0.05) and
a verdict: holds / contradicted / inconclusive at this scale.

Rows are named by their key, by a group (`selector`: every row in it) or as `best:<group>` (the group's row with
the highest mean; for `most_tasks`, chosen per task). "On average" = each seed's mean over the tasks every
compared row ran, then Welch's t-test over those per-seed averages."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import combinations

import numpy as np

from spafit_exp.repro import stats
from spafit_exp.repro.stats import CONTRADICTED, HOLDS, INCONCLUSIVE, combine, compare, equivalent, p_text

KINDS = ("better", "top", "similar", "worst", "most_tasks")
TESTS = {
    "better": "one-sided Welch t over per-seed task averages, a − b > margin; every comparison must hold",
    "top": "per task, one-sided Welch t against every other row: in the top k when at most k − 1 rows are not "
           "significantly below it; out when k rows are significantly above it",
    "similar": "TOST (two one-sided Welch t) on per-seed task averages, every pair within ± margin",
    "worst": "one-sided Welch t over per-seed task averages: every other row above it",
    "most_tasks": "per task, one-sided Welch t, a − b > margin; holds on more than half the tasks",
}


@dataclass(frozen=True)
class Claim:
    id: str
    text: str  # the claim, close to the paper's words
    source: str  # where the paper says it
    kind: str
    a: str = ""
    b: tuple[str, ...] = ()
    k: int = 1
    margin: float = 0.0  # in score fractions: 0.02 = two points
    tasks: tuple[str, ...] = ()  # only these tasks (empty: every task run)
    fewer_params: bool = False  # `better` also needs a to train fewer parameters than each b


@dataclass
class Evidence:
    """Per-seed scores at each row's chosen rate: row -> task -> seed -> score (the paper's metric)."""

    scores: dict[str, dict[str, dict[int, float]]]
    groups: dict[str, tuple[str, ...]]  # row -> its groups
    trainable: dict[str, float] = field(default_factory=dict)  # row -> trainable parameters


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    numbers: str
    p: str

    @property
    def test(self) -> str:
        return TESTS[self.claim.kind] + (f" (margin {100 * self.claim.margin:+g} points)" if self.claim.margin else "")


def _members(ev: Evidence, name: str) -> list[str]:
    if name == "*":
        return list(ev.groups)
    if name in ev.scores or name in ev.groups:
        return [name]
    return [row for row, groups in ev.groups.items() if name in groups]


def _tasks(ev: Evidence, claim: Claim, rows: list[str]) -> list[str]:
    run = sorted({t for r in rows for t in ev.scores.get(r, {})})
    run = [t for t in run if all(t in ev.scores.get(r, {}) for r in rows)]
    return [t for t in run if not claim.tasks or t in claim.tasks]


def averages(ev: Evidence, row: str, tasks: list[str]) -> list[float]:
    """Each seed's mean over `tasks` (seeds present on every one of them)."""
    if not tasks or any(t not in ev.scores.get(row, {}) for t in tasks):
        return []
    seeds = set.intersection(*(set(ev.scores[row][t]) for t in tasks))
    return [float(np.mean([ev.scores[row][t][s] for t in tasks])) for s in sorted(seeds)]


def _best(ev: Evidence, name: str, tasks: list[str], exclude: str = "") -> str | None:
    group, _, rest = name.partition(":")
    if group != "best":
        return name if name in ev.scores else None
    rows = [r for r in _members(ev, rest) if r != exclude and averages(ev, r, tasks)]
    return max(rows, key=lambda r: np.mean(averages(ev, r, tasks)), default=None)


def _pct(values) -> str:
    return f"{100 * float(np.mean(values)):.1f}"


def _rows(ev: Evidence, names, exclude: str = "") -> list[str]:
    """Rows named by keys, groups or `best:<group>` (best over the tasks all of the group's rows ran)."""
    out = []
    for name in names:
        if name.startswith("best:"):
            group = [r for r in _members(ev, name[5:]) if r in ev.scores]
            out.append(_best(ev, name, _tasks(ev, Claim("", "", "", ""), group), exclude))
        else:
            out += _members(ev, name)
    return [r for r in dict.fromkeys(out) if r and r != exclude and r in ev.scores]


def _better(ev: Evidence, c: Claim) -> tuple[str, str, str]:
    subjects = _rows(ev, [c.a])
    if not subjects:
        return INCONCLUSIVE, f"{c.a}: not run", "n/a"
    parts, numbers, ps = [], [], []
    for a in subjects:
        for b in _rows(ev, c.b, exclude=a):
            tasks = _tasks(ev, c, [a, b])
            xa, xb = averages(ev, a, tasks), averages(ev, b, tasks)
            verdict, up, _ = compare(xa, xb, c.margin)
            if c.fewer_params and ev.trainable.get(a, np.inf) >= ev.trainable.get(b, -np.inf):
                verdict = CONTRADICTED  # parameter counts do not vary with the seed: no test needed
            parts.append(verdict)
            numbers.append(f"{a} {_pct(xa) if xa else '—'} vs {b} {_pct(xb) if xb else '—'} over {len(tasks)} task(s)"
                           + (f", params {ev.trainable.get(a, np.nan):,.0f} vs {ev.trainable.get(b, np.nan):,.0f}"
                              if c.fewer_params else ""))
            ps.append(p_text(up))
    if not parts:
        return INCONCLUSIVE, f"{c.a} vs {', '.join(c.b)}: nothing to compare (not run)", "n/a"
    return combine(parts), "; ".join(numbers), "; ".join(ps)


def _top(ev: Evidence, c: Claim) -> tuple[str, str, str]:
    others = _rows(ev, c.b, exclude=c.a)
    tasks = [t for t in _tasks(ev, c, [c.a]) if any(t in ev.scores[o] for o in others)]
    if not tasks:
        return INCONCLUSIVE, f"{c.a} or the rows it is ranked among: not run", "n/a"
    parts, numbers, ps = [], [], []
    for task in tasks:
        mine = list(ev.scores[c.a][task].values())
        rivals = {o: list(ev.scores[o][task].values()) for o in others if task in ev.scores[o]}
        if not all(stats.testable(mine, v) for v in rivals.values()):
            parts.append(INCONCLUSIVE)
            numbers.append(f"{task}: fewer than 2 seeds")
            continue
        above = sum(stats.p_greater(v, mine) < stats.ALPHA for v in rivals.values())
        not_below = sum(stats.p_greater(mine, v) >= stats.ALPHA for v in rivals.values())
        parts.append(CONTRADICTED if above >= c.k else HOLDS if not_below <= c.k - 1 else INCONCLUSIVE)
        ranked = sorted(rivals, key=lambda o: -np.mean(rivals[o]))
        rank = 1 + sum(np.mean(v) > np.mean(mine) for v in rivals.values())
        numbers.append(f"{task}: rank {rank}/{len(rivals) + 1}, {above} significantly above, {not_below} not "
                       "significantly below")
        decisive = ranked[min(c.k, len(ranked)) - 1]
        ps.append(f"{task} vs {decisive}: {p_text(stats.p_greater(mine, rivals[decisive]))}")
    return combine(parts), "; ".join(numbers), "; ".join(ps)


def _similar(ev: Evidence, c: Claim) -> tuple[str, str, str]:
    rows = [r for name in c.b for r in _members(ev, name) if r in ev.scores]
    tasks = _tasks(ev, c, rows)
    means = {r: averages(ev, r, tasks) for r in rows}
    if len(rows) < 2 or not tasks:
        return INCONCLUSIVE, "fewer than two rows ran the same tasks", "n/a"
    results = {(x, y): equivalent(means[x], means[y], c.margin) for x, y in combinations(rows, 2)}
    verdict = combine([v for v, _ in results.values()])
    spread = {pair: abs(np.mean(means[pair[0]]) - np.mean(means[pair[1]])) for pair in results}
    widest = max(spread, key=spread.get)
    decisive = max(results, key=lambda pair: results[pair][1]) if verdict != CONTRADICTED else \
        min((pair for pair in results if results[pair][0] == CONTRADICTED), key=lambda pair: results[pair][1])
    numbers = (f"{len(rows)} rows over {len(tasks)} task(s): means {min(_pct(v) for v in means.values())}–"
               f"{max(_pct(v) for v in means.values())}; widest |Δ| {100 * spread[widest]:.1f} ({widest[0]} vs {widest[1]})")
    return verdict, numbers, f"{decisive[0]} vs {decisive[1]}: {p_text(results[decisive][1])} ({len(results)} pairs)"


def _worst(ev: Evidence, c: Claim) -> tuple[str, str, str]:
    others = _rows(ev, c.b, exclude=c.a)
    if c.a not in ev.scores or not others:
        return INCONCLUSIVE, f"{c.a} or the rows it is compared with: not run", "n/a"
    parts, numbers, ps = [], [], []
    for other in others:  # every other row above it
        verdict, text, p = _better(ev, replace(c, kind="better", a=other, b=(c.a,)))
        parts.append(verdict)
        numbers.append(text)
        ps.append(p)
    return combine(parts), "; ".join(numbers), "; ".join(ps)


def _most_tasks(ev: Evidence, c: Claim) -> tuple[str, str, str]:
    tasks = sorted({t for r in _members(ev, c.a.partition(":")[2] or c.a) + [c.b[0]] for t in ev.scores.get(r, {})})
    tasks = [t for t in tasks if not c.tasks or t in c.tasks]
    outcomes, numbers, ps = [], [], []
    for task in tasks:
        a, b = _best(ev, c.a, [task]), c.b[0]
        if a is None or task not in ev.scores.get(b, {}):
            continue
        xa, xb = list(ev.scores[a][task].values()), list(ev.scores[b][task].values())
        verdict, up, _ = compare(xa, xb, c.margin)
        outcomes.append(verdict)
        numbers.append(f"{task}: {a} {_pct(xa)} vs {b} {_pct(xb)} ({verdict})")
        ps.append(f"{task}: {p_text(up)}")
    if not outcomes:
        return INCONCLUSIVE, f"{c.a} / {c.b[0]}: not run on a common task", "n/a"
    held, against = outcomes.count(HOLDS), outcomes.count(CONTRADICTED)
    verdict = HOLDS if held > len(outcomes) / 2 else CONTRADICTED if against >= len(outcomes) / 2 else INCONCLUSIVE
    return verdict, f"holds on {held}/{len(outcomes)} task(s), contradicted on {against}: " + "; ".join(numbers), \
        "; ".join(ps)


CHECKS = {"better": _better, "top": _top, "similar": _similar, "worst": _worst, "most_tasks": _most_tasks}


def check(ev: Evidence, claims) -> list[Verdict]:
    return [Verdict(c, *CHECKS[c.kind](ev, c)) for c in claims]
