"""results.json as a type: the Record every run and study writes and every reader (skip-if-done, `sweep status`,
`make tables`, estimates, the reproductions) reads. `Record.from_json` takes any record this project ever wrote —
older ones lack fields (no `schema`, no `fingerprint`, no `main_metric`): those read as None, and keys this version
does not know are kept in `extra` — and `to_json` gives back exactly the JSON it was read from, so a record read and
handed on is never changed by the reading. The file itself is written by `RunDir.write` (core/run_dir.py) alone.

Versioned: `schema` is SCHEMA_VERSION in every record written now; a record without it predates the key."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from spafit_exp.core import record_check
from spafit_exp.core.run_files import read_plain

RESULTS = "results.json"
SCHEMA_VERSION = 1


class CorruptRecord(ValueError):
    """A results.json that is not a readable JSON object (a disk filled up, an editor, a copy cut short)."""


class SkippedRecord(dict):
    """A finished run's record (as JSON) returned instead of running it again (skip-if-done)."""


@dataclass(eq=False)
class Record:
    """One run's record. Field order is the file's key order; the nested sections stay plain JSON objects (their
    shape is record_check's), read through the accessors below rather than `.get` chains at every reader."""

    schema: int | None = SCHEMA_VERSION
    status: str | None = "running"  # running | completed | failed | interrupted
    experiment: str | None = None
    task: str | None = None
    method: str | None = None
    method_tag: str | None = None
    selector: str | None = None
    model: str | None = None
    lr: float | None = None
    seed: int | None = None
    main_metric: str | None = None
    config: dict | None = None  # the resolved config the run composed
    fingerprint: dict | None = None  # {"hash", "settings"} (core/fingerprint.py)
    provenance: dict | None = None
    params: dict | None = None
    method_info: dict | None = None
    data: dict | None = None
    timing: dict | None = None
    memory: dict | None = None
    error: str | None = None  # failed / interrupted runs
    traceback: str | None = None
    failed_step: int | None = None
    metrics: dict | None = None  # completed runs: {"best": {"epoch", "dev", "test", "train"}, "epochs", ...}
    train: dict | None = None
    device: str | None = None
    artifacts: dict | None = None
    source_run: str | None = None  # studies: the run studied (None: the pretrained model)
    source: dict | None = None
    lr_search: dict | None = None
    probe: dict | None = None
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they were
    # Keys given explicitly (read from JSON or set by `update`): written even when null, so a record read and
    # written again is the same JSON, and a writer's explicit null (failed_step of an interrupt) is kept.
    present: set = field(default_factory=set, repr=False)

    def update(self, **values) -> Record:
        """Set fields (unknown names go to `extra`), as dict.update did on the untyped record; returns self."""
        for key, value in values.items():
            if key in FIELDS:
                setattr(self, key, value)
                self.present.add(key)
            else:
                self.extra[key] = value
        return self

    @classmethod
    def from_json(cls, obj, source: str = "record") -> Record:
        """The record of a parsed results.json; CorruptRecord (naming `source`) when it is no JSON object or a
        field has the wrong type (record_check). Absent fields read as None."""
        if not isinstance(obj, dict):
            raise CorruptRecord(f"{source}: unreadable record (not a JSON object)")
        malformed = record_check.problem(obj)
        if malformed:
            raise CorruptRecord(f"{source}: malformed record ({malformed})")
        known = {key: obj.get(key) for key in FIELDS}
        return cls(**known, extra={k: v for k, v in obj.items() if k not in FIELDS}, present=set(obj) & set(FIELDS))

    def to_json(self) -> dict:
        """The record as the JSON object results.json holds (nested sections shared, not copied)."""
        out = {key: getattr(self, key) for key in FIELDS if getattr(self, key) is not None or key in self.present}
        return out | self.extra

    def __eq__(self, other) -> bool:
        return isinstance(other, Record) and self.to_json() == other.to_json()

    # Typed reads of the nested sections: what tables, sweep status and the studies need.
    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def fingerprint_hash(self) -> str | None:
        return (self.fingerprint or {}).get("hash")

    @property
    def settings(self) -> dict | None:
        """The fingerprinted settings (None: written before fingerprints)."""
        return (self.fingerprint or {}).get("settings")

    @property
    def best(self) -> dict:
        return (self.metrics or {}).get("best") or {}

    def scores(self, split: str) -> dict:
        """{metric: value} of the best epoch on `split` (dev, test, train); empty when not recorded."""
        return self.best.get(split) or {}

    @property
    def dev_score(self) -> float | None:
        """The dev main metric at the best epoch, when it is a finite number (what a learning rate is chosen by)."""
        value = self.scores("dev").get(self.main_metric)
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if finite else None

    @property
    def reported_split(self) -> str:
        return (self.metrics or {}).get("reported_split", "dev")

    def seconds(self, key: str) -> float | None:
        """A `timing` entry (wall_s, train_s, earlier_sessions_s, ...), None when absent."""
        value = (self.timing or {}).get(key)
        return None if value is None else float(value)

    def section(self, name: str) -> dict:
        """A nested section (params, memory, train, data, config, method_info, provenance) or {}."""
        value = getattr(self, name) if name in FIELDS else self.extra.get(name)
        return value if isinstance(value, dict) else {}


FIELDS = tuple(f.name for f in fields(Record) if f.name not in ("extra", "present"))


def read(directory: Path) -> Record | None:
    """The run's record, None if there is none; CorruptRecord (naming the file) if it cannot be read, is no plain
    file (a FIFO, a link) or is malformed (a field of the wrong type, record_check)."""
    path = Path(directory) / RESULTS
    try:
        raw = read_plain(path)
        if raw is None:
            return None
        obj = json.loads(raw.decode())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        raise CorruptRecord(f"{path}: unreadable record ({type(err).__name__}: {why})") from None
    return Record.from_json(obj, str(path))
