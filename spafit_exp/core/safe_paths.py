"""Values that become path components (experiment, task, method tag, model name, and record fields read back by
tables / sweep status) must each be one safe directory name: no separators, no `..`, nothing empty, no control
characters. On a shared cluster filesystem a value such as `../../x` would otherwise write outside `run.root`."""

from __future__ import annotations

from pathlib import Path

from spafit_exp.core.errors import ConfigError


def component_problem(value: object) -> str | None:
    """Why `value` is not one safe path component, or None when it is."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if value.strip() == "":
        return "must not be empty"
    if value in (".", ".."):
        return "must not be '.' or '..'"
    if "/" in value or "\\" in value:
        return "must be one directory name (no '/' or '\\')"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "must not contain control characters"
    if len(value.encode()) > 200:
        return "is too long for a directory name"
    return None


def check_component(key: str, value: object) -> str:
    """`value` if it is one safe path component, else a one-line ConfigError naming `key`."""
    problem = component_problem(value)
    if problem is not None:
        raise ConfigError(f"{key}={value!r}: {problem}")
    return value  # type: ignore[return-value]


def is_within(path: Path, root: Path) -> bool:
    """True when `path` resolves inside `root` (both resolved, so `..` and symlinks cannot escape)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
