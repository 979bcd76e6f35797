"""The shape of a record as its readers (`make tables`, `sweep status`, skip-if-done, estimates) use it: each field
they read has the type they assume, and the identity fields that become folder or file names (the run directory,
a table's `<experiment>.md`, a plot's `<task>` in its name) are each one safe path component. A field may be
absent or null (older records lack some): only a present value of the wrong type makes a record malformed, which
`Record.from_json` reports as a CorruptRecord naming the file and the field, so one damaged record is skipped (tables)
or counted corrupt (status) instead of ending the whole command in a traceback or writing outside its folder."""

from __future__ import annotations

from spafit_exp.core.safe_paths import component_problem

COMPONENT, NUMBER, TEXT, SCORES, OBJECT = "component", "number", "string", "scores", "object"

# field -> kind, or the fields of a nested object
SHAPE: dict = {
    "experiment": COMPONENT, "task": COMPONENT, "method_tag": COMPONENT, "model": COMPONENT,
    "method": TEXT, "selector": TEXT, "status": TEXT, "main_metric": TEXT, "error": TEXT,
    "lr": NUMBER, "seed": NUMBER, "failed_step": NUMBER,
    "metrics": {"best": {"epoch": NUMBER, "dev": SCORES, "test": SCORES, "train": SCORES}, "reported_split": TEXT},
    "params": {"trainable": NUMBER, "total": NUMBER},
    "memory": {"peak_bytes": NUMBER, "cuda_max_allocated_bytes": NUMBER},
    "timing": {key: NUMBER for key in ("wall_s", "train_s", "earlier_sessions_s", "train_samples_per_s",
                                       "train_tokens_per_s", "setup_s", "eval_s", "save_s", "other_s")},
    "train": {"tokens": NUMBER, "samples": NUMBER},
    "data": {"train_rows": NUMBER},
    "provenance": {"git_sha": TEXT},
    "fingerprint": {"hash": TEXT, "settings": OBJECT},
    "method_info": {"fraction": NUMBER},
    "config": {"task": {"display": TEXT}, "method": {"r": NUMBER}, "selector": {"fraction": NUMBER, "k": NUMBER},
               "trainer": {"max_train_samples": NUMBER}},
}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind_problem(kind: str, value) -> str | None:
    if kind == COMPONENT:
        return component_problem(value)
    expected = {NUMBER: _number, TEXT: lambda v: isinstance(v, str), OBJECT: lambda v: isinstance(v, dict)}[kind]
    return None if expected(value) else f"must be a {kind}, not {type(value).__name__}"


def problem(record: dict, shape: dict = SHAPE, prefix: str = "") -> str | None:
    """Why `record` is malformed (`timing: must be an object, not str`), or None when its fields have their shape."""
    for key, kind in shape.items():
        value = record.get(key)
        if value is None:
            continue
        if isinstance(kind, dict) or kind == SCORES:
            if not isinstance(value, dict):
                return f"{prefix}{key}: must be an object, not {type(value).__name__}"
            fields = kind if isinstance(kind, dict) else dict.fromkeys(value, NUMBER)  # scores: any metric names
            found = problem(value, fields, f"{prefix}{key}.")
        else:
            found = _kind_problem(kind, value)
            found = found and f"{prefix}{key}={value!r:.60}: {found}"
        if found:
            return found
    return None
