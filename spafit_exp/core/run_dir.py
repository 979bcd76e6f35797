"""One run directory: where it lies (the layout), who owns it (the lock), what it holds (its state), who may run
in it (the claim) and the one writer of its results.json. The run, `sweep plan`/`status`, the local launcher's
summary, the reproductions and the studies all ask a RunDir, so that "refused: another recipe, completed or
resumable" is decided in one place (`RunDir.refuses`) and every record goes through one lock, one fingerprint
check and one atomic write (`RunDir.write`).

States, from the files alone (records, resume checkpoints and lock files on a shared filesystem written by Slurm
jobs on other nodes: no process table is read):

    completed    results.json status=completed (same recipe as the caller's, when it says which)
    refused      completed, or resumable, under another recipe: refused (one line, exit 2) until it gets another
                 experiment_name or run.force=true
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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spafit_exp.core import fingerprint
from spafit_exp.core.errors import ConfigError, RecipeMismatch
from spafit_exp.core.record import RESULTS, CorruptRecord, Record, read
from spafit_exp.core.results import write_json_atomic
from spafit_exp.core.run_files import LOCK, WriteFailed, acquire_lock, lock_is_held, lock_owner, release_lock, set_aside
from spafit_exp.core.safe_paths import check_component, is_within

RESUME_FILE = "resume.pt"  # the loop's resume checkpoint (engine/resume.py); named here for readers without torch
# <run.root>/<experiment>/<task>/<method tag>/<model>/lr=<lr>/seed=<seed>: conf/config.yaml's run.dir and Hydra's
# sweep dir + subdir spell the same folders (tests/test_run_dir.py holds them together).
LAYOUT = ("experiment", "task", "method_tag", "model", "lr", "seed")
STATES = ("completed", "failed", "interrupted", "crashed", "running", "corrupt", "refused", "todo")
RELAUNCH = ("failed", "interrupted", "crashed", "corrupt", "todo")  # what launching the sweep again would run


class RunBusy(ConfigError):
    """Another live process holds the run directory's lock: nothing of this writer's is written there."""


@dataclass
class RunState:
    directory: Path
    state: str
    record: Record | None = None  # None when there is none or it is unreadable
    detail: str = ""  # the error (failed), the unreadable file (corrupt), the lock's owner (running)


@dataclass
class Claim:
    """Rank 0's decision for a run directory: run it (holding the lock), skip it, or refuse it."""

    action: str  # run | skip | busy | error
    message: str = ""
    record: Record | None = None  # skip: the completed run's record
    lock: object = None
    created: tuple[str, ...] = ()  # files this claim created (removed again if the run is refused while loading)
    mismatch: bool = False  # refused because the directory holds another recipe (in a sweep: this job only)

    def undo(self, directory: Path) -> None:
        for name in self.created:
            (Path(directory) / name).unlink(missing_ok=True)

    def release(self) -> None:
        release_lock(self.lock)
        self.lock = None

    def shared(self) -> tuple:
        """What the other ranks of a distributed run are told (no lock, no record: rank 0 holds and writes them)."""
        return self.action, self.message, self.mismatch

    @classmethod
    def from_shared(cls, shared: tuple) -> Claim:
        action, message, mismatch = shared
        return cls(action, message, mismatch=mismatch)


@dataclass
class RunDir:
    path: Path

    def __post_init__(self):
        self.path = Path(self.path)

    @classmethod
    def of(cls, root, experiment: str, task: str, method_tag: str, model: str, lr, seed) -> RunDir:
        """The directory of a run named by plain values (a study's record, a reproduction's planned run). The values
        may come from other runs' records, so each must be one folder name and the result lie inside `root`
        (else ConfigError)."""
        names = {"experiment": experiment, "task": task, "method_tag": method_tag, "model": model, "lr": f"lr={lr}",
                 "seed": f"seed={seed}"}
        path = Path(root).joinpath(*(check_component(key, names[key]) for key in LAYOUT))
        if not is_within(path, Path(root)):
            raise ConfigError(f"{path}: resolves outside {root} (a symbolic link?)")
        return cls(path)

    @property
    def experiment_root(self) -> Path:
        """<run.root>/<experiment>: the folder a sweep's runs share (lr_search reads its edges there)."""
        return self.path.parents[len(LAYOUT) - 2]

    # The files.
    @property
    def resumable(self) -> bool:
        return (self.path / RESUME_FILE).is_file()

    def record(self) -> Record | None:
        """CorruptRecord when results.json cannot be read (core/record.py)."""
        return read(self.path)

    def lock(self):
        """The lock's handle (keep it; release_lock), or None when another live process holds it."""
        return acquire_lock(self.path)

    def lock_held(self) -> bool:
        return lock_is_held(self.path)

    def lock_owner(self) -> str:
        return lock_owner(self.path)

    def set_aside(self, why: str) -> Path | None:
        """Move results.json to results.<why>-<UTC time>.json beside it (kept, never deleted); the new path."""
        path = self.path / RESULTS
        if not os.path.lexists(path):  # a FIFO or a link planted as the record is moved aside too (never followed)
            return None
        return set_aside(path, why)

    def earlier_sessions_s(self) -> float:
        """Wall time already spent on a run being resumed (its interrupted or failed record's total)."""
        try:
            record = self.record()
        except CorruptRecord:
            return 0.0
        if record is None:
            return 0.0
        wall = record.seconds("wall_s")
        return wall if wall is not None else record.seconds("earlier_sessions_s") or 0.0

    # What the directory holds, decided once.
    @staticmethod
    def other_recipe(record: Record, recipe: str | None) -> bool:
        """The record holds a fingerprint hash other than `recipe` (None, or a record without one: unknown)."""
        return recipe is not None and record.fingerprint_hash not in (None, recipe)

    def refuses(self, record: Record, recipe: str | None, resume: bool = True) -> bool:
        """Whether a run of fingerprint hash `recipe` is refused here: the record holds another recipe and is
        completed or resumable (resume.pt, unless the run starts over: resume=False)."""
        return self.other_recipe(record, recipe) and (record.completed or (resume and self.resumable))

    def state(self, recipe: str | None = None, resume: bool = True, lock: bool = True,
              force: bool = False) -> RunState:
        """The state of the directory. `recipe`: the fingerprint hash the caller would run (None: not checked);
        `lock=False` leaves the lock out (its owner asking about the files it holds); `force` (run.force=true):
        a completed or refused run is replaced, so still to do."""
        found = self._state(recipe, resume, lock)
        if force and found.state in ("completed", "refused"):
            return RunState(self.path, "todo", found.record, "run.force=true replaces it")
        return found

    def _state(self, recipe: str | None, resume: bool, lock: bool) -> RunState:
        if lock and self.lock_held():
            try:
                record = self.record()
            except CorruptRecord:
                record = None
            return RunState(self.path, "running", record, self.lock_owner())
        try:
            record = self.record()
        except CorruptRecord as err:
            return RunState(self.path, "corrupt", None, str(err))
        if record is None:  # checkpointed before any record: unusual
            return RunState(self.path, "interrupted" if self.resumable else "todo")
        if self.refuses(record, recipe, resume):
            return RunState(self.path, "refused", record, "holds another recipe (fingerprint)")
        status = record.status
        if status == "completed":
            return RunState(self.path, "completed", record)
        if status == "failed":
            return RunState(self.path, "failed", record, str(record.error or "unknown error"))
        if status == "interrupted":
            return RunState(self.path, "interrupted", record, str(record.error or ""))
        if status == "running":  # and the lock is free: its process is gone
            return RunState(self.path, "crashed", record, "record says running; no process holds its lock")
        return RunState(self.path, "corrupt", record, f"unknown status {status!r}")

    def _mismatch(self, held: Record, recipe: dict) -> RecipeMismatch:
        diffs = fingerprint.describe(fingerprint.differences(held.settings or {}, recipe["settings"]))
        what = "a completed run" if held.completed else "an unfinished run (resume.pt)"
        return RecipeMismatch(f"{self.path} holds {what} with a different recipe ({diffs}): use another "
                              f"experiment_name, or run.force=true to replace it")

    def _previous(self, recipe: dict, force: bool, resume: bool, locked: bool) -> Record | None:
        """A completed run of the same recipe (skip), or None (run); RecipeMismatch when refused. Records a run
        replaces are moved aside, never deleted — only with the lock held."""
        state = self.state(recipe["hash"], resume, lock=False)
        if state.state == "corrupt" and state.record is None:
            if locked:
                kept = self.set_aside("corrupt")
                print(f"warning: {state.detail}; kept as {kept.name}, the run is redone", file=sys.stderr)
            return None
        held = state.record
        if held is None:
            return None
        if force or (state.state != "refused" and self.other_recipe(held, recipe["hash"])):
            if locked:
                self.set_aside("replaced")
            return None
        if state.state == "refused":
            raise self._mismatch(held, recipe)
        return held if state.state == "completed" else None

    def claim(self, recipe: dict, force: bool = False, resume: bool = True, ready: Callable[[], None] = lambda: None,
              files: tuple[str, ...] = ()) -> Claim:
        """Decide, and take the lock to run. `recipe`: the run's fingerprint; `ready` checks what must hold before
        anything is created (ConfigError); `files`: the run's files besides the lock that `Claim.undo` removes.
        Looked at before the lock (a completed run is skipped without waiting) and again with it held."""
        skip = f"skip: {self.path} is completed (run.force=true to rerun)"
        try:
            previous = self._previous(recipe, force, resume, locked=False)
            if previous is not None:
                return Claim("skip", skip, previous)
            ready()
            created = tuple(n for n in (LOCK, *files) if not os.path.lexists(self.path / n))  # a link is not ours
            lock = self.lock()
            if lock is None:
                return Claim("busy", f"skip: {self.path} is being run by another process")
            claim = Claim("run", lock=lock, created=created)
            try:
                previous = self._previous(recipe, force, resume, locked=True)
            except ConfigError:
                claim.release()
                claim.undo(self.path)
                raise
            if previous is not None:
                claim.release()
                return Claim("skip", skip, previous)
            return claim
        except ConfigError as err:
            return Claim("error", str(err), mismatch=isinstance(err, RecipeMismatch))

    # The one writer of results.json.
    def write(self, record: Record, claim: Claim | None = None, force: bool = False) -> None:
        """Write `record` atomically under the directory's lock: the caller's `claim` (a run), or taken for this
        write (a study; RunBusy while another process holds it). A record there of another recipe, completed or
        resumable, is refused (RecipeMismatch) unless `force`; one replaced or unreadable is moved aside."""
        lock = claim.lock if claim is not None else self.lock()
        if lock is None:
            owner = self.lock_owner()
            raise RunBusy(f"{self.path}: another process holds its lock ({owner or 'owner unknown'}); its record "
                          "is not written over")
        try:
            try:
                held = self.record()
            except CorruptRecord as err:
                kept = self.set_aside("corrupt")
                print(f"warning: {err}; kept as {kept.name}", file=sys.stderr)
                held = None
            recipe = record.fingerprint_hash
            if held is not None and self.other_recipe(held, recipe):
                if self.refuses(held, recipe) and not force:
                    raise self._mismatch(held, record.fingerprint or {"settings": {}})
                self.set_aside("replaced")
            write_json_atomic(self.path / RESULTS, record.to_json())
        finally:
            if claim is None:
                release_lock(lock)

    def write_if_possible(self, record: Record, claim: Claim | None = None) -> None:
        """Write a failed or interrupted run's record unless the disk refuses it too (still full): then the record
        stays as last written (`running`: sweep status calls it crashed) and the caller raises the run's error."""
        try:
            self.write(record, claim)
        except WriteFailed:
            pass


def run_dirs(root: Path) -> list[RunDir]:
    """Every run directory under `root` (one holding a record, a resume checkpoint or a lock), skipping hidden
    folders such as submitit's logs; sorted."""
    found = []
    for current, folders, files in os.walk(root):
        folders[:] = [f for f in folders if not f.startswith(".")]
        if {RESULTS, RESUME_FILE, LOCK} & set(files):
            found.append(RunDir(Path(current)))
    return sorted(found, key=lambda d: d.path)
