"""Table layouts: how `make tables` prints an experiment. An experiment without a layout gets one column per
task (its main metric); a paper's experiment names its columns (task, metrics printed, label) as the paper does,
an ablation sweep names its row keys and what varies along the columns, and a table assembled from several
experiments (the subset paper's Table 3: a primary experiment and the studies of its runs) builds itself.

Adding a table = a module in this package with `register(experiment, Layout(...))` + the experiment's YAML in
conf/experiment/ + a test."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from spafit_exp.core.registry import Registry, discover


@dataclass(frozen=True)
class Column:
    task: str
    metrics: tuple[str, ...]  # printed "a / b"; the first one is averaged and carries the LR
    label: str


@dataclass(frozen=True)
class Layout:
    columns: tuple[Column, ...] = ()  # paper columns; empty = one per task
    ablation: tuple[tuple[str, ...], str] | None = None  # (row keys, varying column: "size" | "task")
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the table prints, for its footer
    significance: float | None = None  # mark the rows tied with each column's best at this level (significance.py)
    # A table of its own from every experiment's runs (collect's DataFrame) -> (table, footer), or None when its
    # experiments are not there; registered under the table's name rather than an experiment's.
    build: Callable | None = None


LAYOUTS: Registry[Layout] = Registry("table")


def register(experiment: str, layout: Layout) -> None:
    LAYOUTS.add(experiment, layout)


def layout_of(experiment: str) -> Layout:
    return LAYOUTS.entries.get(experiment, Layout())


def assembled() -> list[tuple[str, Callable]]:
    """(table name, build) of the layouts that assemble a table from several experiments."""
    return [(name, layout.build) for name, layout in sorted(LAYOUTS.entries.items()) if layout.build is not None]


discover(__name__, __path__)
