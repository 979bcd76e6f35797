"""What a reproduction runs, as data: a paper (its preset, published table, claims and scales) and, per scale, the
model, tasks, rows of the table (each a method / selector choice), seeds, learning-rate grid, rows and epochs.

Scales `tiny` and `cpu` run the paper's preset (its recipe: optimizer, warm-up, clipping, head, decoder
pre-tuning) on a small model with fewer rows and epochs, and pick each row's rate by a screen: the recommended
rate (`lr:` of the method's or selector's YAML, read by composing the run) and its neighbours on the paper's own
grid, on seed 1, judged on the selection split (dev); the chosen rate is then repeated over the other seeds.
Scale `paper` is the preset's own sweep(s), unchanged."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from spafit_exp.core.errors import ConfigError
from spafit_exp.run.config import compose

SCALES = ("tiny", "cpu", "paper")
SCREEN_SEED = 1
SPACING = 1.5  # the least ratio between a screened rate and the next


@dataclass(frozen=True)
class Row:
    """One row of the paper's table: the published row it stands for and the overrides that run it."""

    key: str  # the published table's row name
    overrides: tuple[str, ...]
    groups: tuple[str, ...] = ()  # what claims call it by ("peft", "spafit", "selector", ...)
    screen: bool = True  # False: the rate changes nothing (nothing is retrained), only the recommended one runs


@dataclass(frozen=True)
class Scale:
    name: str
    model: str
    tasks: tuple[str, ...]
    rows: tuple[Row, ...]
    seeds: int
    rates: int  # how many rates are screened: 1 (the recommended one), 2 (and the one below) or 3 (and above)
    extensions: int = 0  # the screen's edge extensions (lr_search.extend_grid): the paper's rule where it has one
    train_rows: int | None = None
    eval_rows: int | None = None
    epochs: int | None = None
    extra: tuple[str, ...] = ()  # further overrides of every run (e.g. fewer WikiText paragraphs)
    note: str = ""


@dataclass(frozen=True)
class Published:
    """A paper's main table as printed: score per row and task (fractions, as the records hold them)."""

    source: str  # table, page and where in the paper
    rows: dict[str, dict[str, float | None]]
    std: dict[str, dict[str, float]] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # the paper's parameter column, as printed
    average: dict[str, float] = field(default_factory=dict)  # the paper's own average column, where it prints one
    decimals: int = 2  # decimals the paper prints (fractions)
    note: str = ""


@dataclass(frozen=True)
class Paper:
    name: str
    title: str
    preset: str  # conf/experiment/<preset>.yaml: the recipe every scale starts from
    grid: tuple[float, ...]  # the paper's rates per decade (mantissas): neighbours of the recommended rate
    published: Published
    claims: tuple  # claims.Claim
    scales: dict[str, Scale]
    paper_sweeps: tuple[tuple[str, ...], ...]  # scale `paper`: each one `python -m spafit_exp -m <args>`
    paper_rows: tuple[Row, ...]  # scale `paper`: the table's rows (their method tags name the records)
    selection: str = ""  # the paper's LR selection rule, in words


def scale_of(paper: Paper, name: str) -> Scale | None:
    if name not in SCALES:
        raise ConfigError(f"--scale {name}: choose from {', '.join(SCALES)}")
    return paper.scales.get(name)


def grid_rates(recommended: float, mantissas: tuple[float, ...], count: int) -> list[float]:
    """`recommended` and, for count 2, the paper-grid rate below it; for count 3, also the one above. The
    neighbours are at least 1.5x away, so a recommended rate just off the grid (6e-5 on a 1-2-5 grid) is not
    screened against its near twin (5e-5) but against 2e-5 and 1e-4."""
    grid = sorted(float(f"{m:g}e{e}") for e in range(-8, 2) for m in mantissas)
    below = max((r for r in grid if r <= recommended / SPACING * (1 + 1e-9)), default=recommended / 3)
    above = min((r for r in grid if r >= recommended * SPACING * (1 - 1e-9)), default=recommended * 3)
    return sorted([recommended, below, above][:count])


def repeat_seeds(scale: Scale) -> str:
    """The seeds a chosen rate is repeated on, in words."""
    first, last = SCREEN_SEED + 1, SCREEN_SEED + scale.seeds - 1
    return "no other seed" if last < first else f"seed {first}" if first == last else f"seeds {first}–{last}"


def lr_text(lr: float) -> str:
    """1e-05, not 1.0000000000000002e-05: rates name run directories."""
    return f"{float(f'{lr:.3g}'):g}"


@dataclass
class Layout:
    """Where a (paper, scale) reproduction keeps its runs and its report."""

    folder: Path  # report.md, pareto.png, sessions.json
    run_root: Path
    experiment: str

    @property
    def runs(self) -> Path:
        return self.run_root / self.experiment


def layout(paper: Paper, scale: str, out: Path, overrides: list[str] = ()) -> Layout:
    folder = Path(out) / (paper.name if scale == "cpu" else f"{paper.name}-{scale}")
    if scale == "paper":  # the preset's own folder, wherever run.root points
        root = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.root=")), "outputs")
        experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment_name=")), paper.preset)
        return Layout(folder, Path(root), experiment)
    return Layout(folder, folder / "runs", f"repro_{paper.name}_{scale}")


def base_overrides(paper: Paper, scale: Scale, where: Layout, overrides: list[str] = ()) -> list[str]:
    """Every run of a tiny / cpu reproduction: the paper's preset, scaled down, in its own experiment folder."""
    args = [f"experiment={paper.preset}", f"model={scale.model}", f"experiment_name={where.experiment}",
            f"run.root={where.run_root}", "trainer.save_trainable=false"]
    for key, value in (("max_train_samples", scale.train_rows), ("max_eval_samples", scale.eval_rows),
                       ("epochs", scale.epochs)):
        if value is not None:
            args.append(f"trainer.{key}={value}")
    return args + list(scale.extra) + list(overrides)


def run_overrides(base: list[str], row: Row, task: str, lr: float | None = None, seed: int | None = None) -> list[str]:
    args = [*base, *row.overrides, f"task={task}"]
    if lr is not None:
        args.append(f"trainer.lr={lr_text(lr)}")
    if seed is not None:
        args.append(f"trainer.seed={seed}")
    return args


def recommended_lr(base: list[str], row: Row, task: str) -> float:
    """The rate a run of this row uses when none is given: its method's (or selector's) `lr:`, after the preset."""
    try:
        cfg = compose(run_overrides(base, row, task))
    except Exception as err:  # noqa: BLE001 - Hydra's errors: one line naming the row
        raise ConfigError(f"row {row.key!r} ({' '.join(row.overrides)}): {str(err).splitlines()[0]}") from None
    lr = cfg.trainer.lr
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"row {row.key!r}: no recommended learning rate (trainer.lr={lr})")
    return float(lr)


def screen_rates(paper: Paper, scale: Scale, base: list[str], row: Row, task: str) -> list[float]:
    return grid_rates(recommended_lr(base, row, task), paper.grid, scale.rates if row.screen else 1)


def planned_runs(scale: Scale) -> int:
    """Screen and repeats of every row and task, edge extensions aside."""
    return sum((scale.rates if row.screen else 1) + scale.seeds - 1 for row in scale.rows) * len(scale.tasks)
