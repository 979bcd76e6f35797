"""Running a tiny / cpu reproduction: ordinary runs (`app.run`, in this process, as a basic-launcher sweep does),
each in its own run directory, so a rerun continues from the records (completed runs are skipped, interrupted
ones resume from resume.pt). First the screen — each row's rates on seed 1, extended past an edge as the paper's
rule says (`lr_search.extend_grid`) — then the chosen rate of every cell on the other seeds. Each session's start,
end and counts go to sessions.json (the report's wall time)."""

from __future__ import annotations

import json
import math
import socket
import sys
import time
from dataclasses import dataclass, field

from spafit_exp.core import results
from spafit_exp.core.errors import ConfigError, RunInterrupted
from spafit_exp.core.record import SkippedRecord
from spafit_exp.core.results import cpu_summary, write_json_atomic
from spafit_exp.repro.recipe import SCREEN_SEED, Layout, Paper, Row, Scale, base_overrides, lr_text, run_overrides, screen_rates
from spafit_exp.run.config import compose
from spafit_exp.sweep.lr_search import extend_grid

SESSIONS = "sessions.json"


@dataclass
class Session:
    started: float = field(default_factory=time.time)
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    command: str = ""


def check(paper: Paper, scale: Scale, where: Layout, overrides: list[str]) -> dict[str, list[float]]:
    """Every row composes and validates (its first task, recommended rate) before anything is written: bad input
    is one ConfigError. Returns each row's screened rates."""
    from spafit_exp.run.validation import validate

    base = base_overrides(paper, scale, where, overrides)
    rates = {}
    for row in scale.rows:
        rates[row.key] = screen_rates(paper, scale, base, row, scale.tasks[0])
        for task in scale.tasks:
            try:
                validate(compose(run_overrides(base, row, task, rates[row.key][0], SCREEN_SEED)))
            except ConfigError as err:
                raise ConfigError(f"row {row.key!r} on {task}: {err}") from None
    results.require_writable_root(where.run_root)
    return rates


def _score(record: dict | None) -> float:
    if not record or record.get("status") != "completed":
        return math.nan
    value = ((record.get("metrics") or {}).get("best") or {}).get("dev", {}).get(record.get("main_metric"))
    return float(value) if isinstance(value, (int, float)) else math.nan


def _one(args: list[str], label: str, session: Session, log) -> float:
    from spafit_exp.run.app import run  # the loop and its libraries: only once a run is due

    started = time.time()
    try:
        record = run(compose(args))
    except RunInterrupted:
        raise
    except ConfigError as err:  # e.g. a run directory holding another recipe: this run only
        session.failed.append(f"{label}: {err}")
        log(f"refused: {label}: {err}")
        return math.nan
    except Exception as err:  # noqa: BLE001 - recorded as failed in its results.json; the reproduction goes on
        session.failed.append(f"{label}: {type(err).__name__}: {err}")
        log(f"failed: {label}: {type(err).__name__}: {str(err)[:200]}")
        return math.nan
    if record is None:  # another process holds the run directory: it runs it
        log(f"busy: {label}: run by another process")
        return math.nan
    skipped = isinstance(record, SkippedRecord)
    session.skipped += skipped
    session.ran += not skipped
    score = _score(record)
    log(f"{'skipped (done)' if skipped else 'done'}: {label}: dev {record.get('main_metric')}="
        f"{score:.4f} ({time.time() - started:.0f}s)")
    return score


def execute(paper: Paper, scale: Scale, where: Layout, overrides: list[str], command: str = "",
            log=print) -> Session:
    """Screen, then repeat; returns the session (its failures are also in the runs' records)."""
    rates = check(paper, scale, where, overrides)
    base = base_overrides(paper, scale, where, overrides)
    session = Session(command=command or " ".join(sys.argv))
    try:
        chosen: dict[tuple[str, str], float] = {}
        for row in scale.rows:
            for task in scale.tasks:
                chosen[(row.key, task)] = _screen(base, row, task, rates[row.key], scale, session, log)
        for row in scale.rows:
            for task in scale.tasks:
                lr = chosen[(row.key, task)]
                if math.isnan(lr):
                    log(f"no rate chosen for {row.key} on {task}: every screen run failed")
                    continue
                for seed in range(SCREEN_SEED + 1, SCREEN_SEED + scale.seeds):
                    _one(run_overrides(base, row, task, lr, seed), f"{task} / {row.key} lr={lr_text(lr)} seed={seed}",
                         session, log)
    finally:
        _record_session(where, session)
    return session


def _screen(base: list[str], row: Row, task: str, rates: list[float], scale: Scale, session: Session, log) -> float:
    def score(lr: float) -> float:
        return _one(run_overrides(base, row, task, lr, SCREEN_SEED), f"{task} / {row.key} lr={lr_text(lr)} "
                    f"seed={SCREEN_SEED} (screen)", session, log)

    if len(rates) == 1:
        return rates[0] if not math.isnan(score(rates[0])) else math.nan
    outcome = extend_grid(rates, score, scale.extensions)
    tried = outcome["tried"]
    return outcome["best_lr"] if not all(math.isnan(v) for v in tried.values()) else math.nan


def _record_session(where: Layout, session: Session) -> None:
    path = where.folder / SESSIONS
    try:
        sessions = read_sessions(where)
        sessions.append({"started": session.started, "ended": time.time(), "wall_s": time.time() - session.started,
                         "ran": session.ran, "skipped": session.skipped, "failed": session.failed,
                         "host": socket.gethostname(), "machine": cpu_summary(), "command": session.command})
        write_json_atomic(path, sessions)
    except (OSError, results.WriteFailed) as err:  # the runs' own records are what counts; say so and go on
        print(f"warning: could not write {path}: {err}", file=sys.stderr)


def read_sessions(where: Layout) -> list[dict]:
    try:
        found = json.loads((where.folder / SESSIONS).read_text())
        return found if isinstance(found, list) else []
    except (OSError, ValueError):
        return []
