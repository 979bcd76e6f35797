"""Where a run's time goes: the phases of a completed record's `timing` and their totals over a sweep.

setup_s: from the run's start to its first training batch (for the first run a process trains, from the process's
start: imports, model build, data load or cache, method set-up, selection stages); train_s: the training loop
without the evaluations and saves done inside it; eval_s: every dev / test / train-rows evaluation; save_s:
resume checkpoints, the best epoch's tensors (their copy to the host and trainable.safetensors); other_s: what is
left of wall_s (logging between epochs, the method's summary; a resumed run's work lost after the last checkpoint
of an interrupted session). Resumed runs add up every session in each phase, as in wall_s.

Torch-free: the sweep summaries (and the planner's readers of records) use it without loading the loop."""

from __future__ import annotations

import time
from contextlib import contextmanager

from spafit_exp import PROCESS_STARTED

PHASES = ("setup", "train", "eval", "save", "other")

_unclaimed: float | None = PROCESS_STARTED  # the process's start, until the first run that trains claims it


def run_origin(run_started: float) -> float:
    """When a run's clock starts: the process's start for the first run a process trains (its imports are that
    run's set-up), `run_started` for every later one (the next jobs of an in-process sweep)."""
    global _unclaimed
    origin, _unclaimed = _unclaimed, None
    return run_started if origin is None else origin


@contextmanager
def adding(result, field: str):
    """Adds the block's duration to `result.<field>` (a TrainResult's eval_seconds, save_seconds...)."""
    begun = time.perf_counter()
    try:
        yield
    finally:
        setattr(result, field, getattr(result, field) + time.perf_counter() - begun)


def record_timing(outcome, started: float, earlier: float, tokens: int | None) -> dict:
    """A record's `timing` from the loop's TrainResult: wall time (since `started`, plus the earlier sessions of a
    resumed run), the phases, training throughput. A failed or interrupted run passes the loop's partial result
    and `tokens=None` (the rows it trained on are not counted in tokens): no tokens/s then."""
    wall = earlier + time.time() - started
    phases = {"setup_s": outcome.setup_seconds, "train_s": outcome.train_seconds, "eval_s": outcome.eval_seconds,
              "save_s": outcome.save_seconds}
    seconds = max(outcome.train_seconds, 1e-9)
    # A session killed outright (SIGKILL, out of memory) wrote no wall time, but its checkpoint kept its phases
    wall = max(wall, sum(phases.values()))
    return {"wall_s": wall, "earlier_sessions_s": earlier, **phases, "other_s": wall - sum(phases.values()),
            "train_samples_per_s": outcome.train_samples / seconds,
            **({} if tokens is None else {"train_tokens_per_s": tokens / seconds}),
            "train_steps_per_s": outcome.steps / seconds}


def _seconds(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def phase_totals(timings: list) -> str:
    """`time: setup 12.3s (8%) · train 120.0s (80%) · eval 15.0s (10%) · save 3.0s (2%) over 4 runs`: the phases
    summed over records' `timing` objects, shares of their summed wall time. Timings without the phases (records
    of older versions, jobs that did not complete: None) are left out; '' when none has them."""
    measured = [t for t in timings if isinstance(t, dict)
                and all(_seconds(t.get(f"{p}_s")) is not None for p in PHASES[:-1])]
    if not measured:
        return ""
    totals = dict.fromkeys(PHASES, 0.0)
    wall = 0.0
    for t in measured:
        known = sum(_seconds(t[f"{p}_s"]) for p in PHASES[:-1])
        for p in PHASES[:-1]:
            totals[p] += _seconds(t[f"{p}_s"])
        run_wall = max(_seconds(t.get("wall_s")) or 0.0, known)
        totals["other"] += run_wall - known
        wall += run_wall
    shown = [p for p in PHASES if p != "other" or totals[p] >= 0.05]
    parts = " · ".join(f"{p} {totals[p]:.1f}s ({100 * totals[p] / max(wall, 1e-9):.0f}%)" for p in shown)
    return f"time: {parts} over {len(measured)} run{'s' if len(measured) != 1 else ''}"
