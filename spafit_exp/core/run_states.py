"""What a run directory says about its run, from the files alone (records, resume checkpoints and lock files on a
shared filesystem written by Slurm jobs on other nodes: no process table is read).

    completed    results.json status=completed (same recipe as the sweep's, when the caller knows it)
    refused      completed, or resumable, under another recipe: the sweep refuses it (one line, exit 2) until
                 it gets another experiment_name or run.force=true
    failed       status=failed (error, traceback and step in the record); rerun → runs again
    interrupted  status=interrupted (SIGINT/SIGTERM/preemption checkpointed it); rerun → resumes from resume.pt
    crashed      status=running but nobody holds the lock: killed (SIGKILL, out of memory, node lost, time limit
                 without a signal); rerun → resumes from the last resume.pt
    running      a live process holds the run's lock
    corrupt      results.json unreadable: a rerun keeps it as results.corrupt-<time>.json and redoes the run
    todo         nothing there yet
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from spafit_exp.core import results

STATES = ("completed", "failed", "interrupted", "crashed", "running", "corrupt", "refused", "todo")
RELAUNCH = ("failed", "interrupted", "crashed", "corrupt", "todo")  # what launching the sweep again would run


@dataclass
class RunState:
    directory: Path
    state: str
    record: dict = field(default_factory=dict)  # empty when there is none or it is unreadable
    detail: str = ""  # the error (failed), the unreadable file (corrupt), the lock's owner (running)


def classify(directory: Path, recipe: str | None = None) -> RunState:
    """The state of one run directory. `recipe`: the fingerprint hash the sweep would run with (None: not
    checked), so that a record of another recipe reads as refused, as the sweep itself would treat it."""
    directory = Path(directory)
    if results.lock_is_held(directory):
        return RunState(directory, "running", _readable(directory), results.lock_owner(directory))
    try:
        record = results.read(directory)
    except results.CorruptRecord as err:
        return RunState(directory, "corrupt", {}, str(err))
    if record is None:
        resumable = (directory / results.RESUME_FILE).is_file()  # checkpointed before any record: unusual
        return RunState(directory, "interrupted" if resumable else "todo")
    status = record.get("status")
    held = (record.get("fingerprint") or {}).get("hash")
    other_recipe = recipe is not None and held is not None and held != recipe
    if other_recipe and (status == "completed" or (directory / results.RESUME_FILE).is_file()):
        return RunState(directory, "refused", record, "holds another recipe (fingerprint)")
    if status == "completed":
        return RunState(directory, "completed", record)
    if status == "failed":
        return RunState(directory, "failed", record, str(record.get("error") or "unknown error"))
    if status == "interrupted":
        return RunState(directory, "interrupted", record, str(record.get("error") or ""))
    if status == "running":  # and the lock is free: its process is gone
        return RunState(directory, "crashed", record, "record says running; no process holds its lock")
    return RunState(directory, "corrupt", record, f"unknown status {status!r}")


def _readable(directory: Path) -> dict:
    try:
        return results.read(directory) or {}
    except results.CorruptRecord:
        return {}


def run_dirs(root: Path) -> list[Path]:
    """Every run directory under `root` (one holding a record, a resume checkpoint or a lock), skipping hidden
    folders such as submitit's logs; sorted."""
    found = []
    for current, folders, files in os.walk(root):
        folders[:] = [f for f in folders if not f.startswith(".")]
        if {results.RESULTS, results.RESUME_FILE, results.LOCK} & set(files):
            found.append(Path(current))
    return sorted(found)
