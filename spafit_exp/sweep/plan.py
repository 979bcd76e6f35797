"""A sweep expanded exactly as `python -m spafit_exp -m <overrides>` would launch it, without running or loading
anything: Hydra composes the sweep's config (multirun mode), Hydra's BasicSweeper splits `hydra.sweeper.params`
plus the command line into jobs (`BasicSweeper.split_arguments`, the code the launch itself runs), and each job's
run directory comes from that job's own composed config.

Composing is the slow step (~0.1 s a config), so a job's config is composed once per distinct choice of config
groups (for stoc_table1: task × method) and the job's value overrides (lr, seed, …) are then applied with Hydra's
own override application — the two steps, in the order, that Hydra's composition of the whole job takes. Only
Hydra and OmegaConf are imported: no torch, no model code."""

from __future__ import annotations

import copy
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from spafit_exp import CONF_DIR
from spafit_exp.core import fingerprint
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.results import RESULTS
from spafit_exp.run.config import check_group_overrides, check_overrides_compose, quote_path_values

MULTIRUN_FLAGS = ("-m", "--multirun")
REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")  # a plain `${dotted.key}` interpolation


@dataclass(frozen=True)
class Job:
    """One run of the sweep: what the launcher gets, where its record goes, and what the estimates need."""

    overrides: tuple[str, ...]  # the job's overrides, as the sweeper hands them to the launcher
    swept: tuple[str, ...]  # its `key=value` for each swept key, in the sweep's key order
    run_dir: Path
    task: str
    method_tag: str
    model: str
    lr: float
    seed: int
    epochs: int
    batch_size: int
    max_train_samples: int | None
    train_rows: int | None  # the task YAML's `size`: the estimate's sizes until finished runs measure them
    tokens_per_row: float | None
    force: bool
    recipe: str | None  # fingerprint hash; computed only where the run directory already holds a record


@dataclass
class Plan:
    args: list[str]  # the command line's overrides (without -m), as the user gave them
    sweep_keys: list[str]
    sweep_values: dict[str, list[str]]  # every value of each swept key, in sweep order (as `key=value`)
    jobs: list[Job]
    sweep_dir: Path  # hydra.sweep.dir: <run.root>/<experiment_name>
    models: dict[str, dict]  # model name -> its architecture fields (compute estimates without loading it)


def _one_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def expand(argv: list[str]) -> Plan:
    """The jobs `python -m spafit_exp -m <argv>` would launch. Bad input raises ConfigError (one line naming the
    key), as the CLI reports it."""
    args = quote_path_values([a for a in argv if a not in MULTIRUN_FLAGS])
    check_group_overrides(args, CONF_DIR)
    check_overrides_compose(args)  # a misspelt key or malformed override: the CLI's own one-line message
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_app = GlobalHydra.instance().hydra
        try:
            master = hydra_app.compose_config("config", args, run_mode=RunMode.MULTIRUN)
        except HydraException as err:
            raise ConfigError(_one_line(err)) from None
        return _expand(args, master, hydra_app.config_loader)


def _expand(args: list[str], master: DictConfig, loader) -> Plan:
    sweeper = master.hydra.sweeper
    if "BasicSweeper" not in str(sweeper.get("_target_", "")):
        raise ConfigError(f"hydra/sweeper={sweeper._target_}: plan expands Hydra's basic sweeper only")
    params = OmegaConf.to_container(sweeper.params, resolve=True) if sweeper.get("params") else {}
    # As BasicSweeper.sweep: the config's sweep params first, then the command line's task overrides.
    lines = [f"{key}={value}" for key, value in params.items()] + list(master.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=loader)
    try:
        parsed = parser.parse_overrides(lines)
        batches = BasicSweeper.split_arguments(parsed, sweeper.get("max_batch_size"))
    except HydraException as err:
        raise ConfigError(f"bad sweep: {_one_line(err)}") from None
    last = {o.get_key_element(): o for o in parsed}  # a later override of a key replaces it, in its first place
    sweep_keys = [key for key, o in last.items() if o.is_sweep_override()]
    sweep_values = {k: [f"{k}={v}" for v in last[k].sweep_string_iterator()] for k in sweep_keys}
    position = {key: i for i, key in enumerate(last)}
    composer = _JobComposer(master, loader, parser)
    jobs = [composer.job(tuple(overrides), tuple(overrides[position[k]] for k in sweep_keys))
            for batch in batches for overrides in batch]
    return Plan(args=args, sweep_keys=sweep_keys, sweep_values=sweep_values, jobs=jobs,
                sweep_dir=Path(str(master.hydra.sweep.dir)), models=composer.models)


class _JobComposer:
    """One job's config: composed once per choice of config groups, then the job's value overrides applied."""

    def __init__(self, master: DictConfig, loader, parser: OverridesParser):
        self.master, self.loader, self.parser = master, loader, parser
        self.parsed: dict[str, object] = {}  # override line -> Override (a sweep repeats a few dozen lines)
        self.group_lines: dict[str, bool] = {}
        self.bases: dict[tuple[str, ...], DictConfig] = {}
        self.models: dict[str, dict] = {}

    def _parse(self, line: str):
        if line not in self.parsed:
            self.parsed[line] = self.parser.parse_override(line)
        return self.parsed[line]

    def _is_group(self, line: str) -> bool:
        """Hydra's own rule (defaults_list.Overrides): a config group's name, and not a dict value."""
        if line not in self.group_lines:
            override = self._parse(line)
            self.group_lines[line] = (self.loader.repository.group_exists(override.key_or_group)
                                      and not isinstance(override.value(), dict))
        return self.group_lines[line]

    def config(self, overrides: tuple[str, ...]) -> DictConfig:
        groups = tuple(line for line in overrides if self._is_group(line))
        values = [self._parse(line) for line in overrides if line not in groups]
        if groups not in self.bases:
            try:
                self.bases[groups] = self.loader.load_sweep_config(self.master, list(groups))
            except HydraException as err:
                raise ConfigError(f"{' '.join(groups)}: {_one_line(err)}") from None
        cfg = self.bases[groups]
        # Every job of a cartesian product sets the same keys, so plain `key=value` overrides may overwrite the
        # shared base in place; additions and deletions need a fresh copy.
        if any(o.is_add() or o.is_force_add() or o.is_delete() for o in values):
            cfg = copy.deepcopy(cfg)
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except HydraException as err:
            raise ConfigError(f"{' '.join(overrides)}: {_one_line(err)}") from None
        return cfg

    def job(self, overrides: tuple[str, ...], swept: tuple[str, ...]) -> Job:
        cfg = self.config(overrides)
        run_dir = Path(str(_resolve(cfg, "run.dir")))
        t = cfg.trainer
        if cfg.model.name not in self.models:
            self.models[cfg.model.name] = OmegaConf.to_container(cfg.model.arch, resolve=True)
        recipe = fingerprint.of(cfg)["hash"] if (run_dir / RESULTS).is_file() else None
        size = cfg.task.get("size") or {}
        return Job(overrides=overrides, swept=swept, run_dir=run_dir, task=cfg.task.name, method_tag=cfg.method.tag,
                   model=cfg.model.name, lr=t.lr, seed=t.seed, epochs=t.epochs,
                   batch_size=_resolve(cfg, "trainer.batch_size") * _resolve(cfg, "trainer.grad_accum"),
                   max_train_samples=t.max_train_samples, train_rows=size.get("train_rows"),
                   tokens_per_row=size.get("tokens_per_row"), force=bool(cfg.run.force), recipe=recipe)


def _resolve(cfg: DictConfig, key: str):
    """`cfg.<key>`, resolved. OmegaConf parses an interpolation with its grammar on every access (~2 ms, seconds
    over thousands of jobs), so a value made of plain `${dotted.key}` references is filled in directly — the
    referenced value itself for a lone reference, else str() of each, as OmegaConf's string interpolation does;
    any other interpolation goes through OmegaConf."""
    parent, _, leaf = key.rpartition(".")
    raw = OmegaConf.select(cfg, parent)._get_node(leaf)._value() if parent else cfg._get_node(leaf)._value()
    if not isinstance(raw, str) or "${" not in raw:
        return raw
    if "${" in REFERENCE.sub("", raw):
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    lone = REFERENCE.fullmatch(raw)
    if lone:
        return _resolve(cfg, lone.group(1))
    return REFERENCE.sub(lambda ref: str(_resolve(cfg, ref.group(1))), raw)


def rectangles(points: list[tuple[str, ...]], order: list[list[str]]) -> list[tuple[tuple[str, ...], ...]]:
    """A set of grid points as a union of disjoint sub-grids (one value list per key): start from the points and
    merge, key by key, sub-grids that agree on every other key, until nothing merges. A full grid comes back as
    one sub-grid; a grid missing one point as a handful."""
    grids = [tuple((value,) for value in point) for point in points]
    merged_some = True
    while merged_some:
        merged_some = False
        for d in range(len(order)):
            by_rest: dict[tuple, list[tuple[str, ...]]] = {}
            for grid in grids:
                by_rest.setdefault(grid[:d] + grid[d + 1:], []).append(grid[d])
            if len(by_rest) < len(grids):
                merged_some = True
            grids = [rest[:d] + (tuple(v for v in order[d] if any(v in part for part in parts)),) + rest[d:]
                     for rest, parts in by_rest.items()]
    return grids


def launch_commands(plan: Plan, jobs: list[Job]) -> list[str]:
    """Commands that launch exactly `jobs` (with any launcher: each is one Hydra sweep, one Slurm job array with
    launcher=slurm): the original command line with every swept key given explicitly per sub-grid."""
    if not jobs:
        return []
    keys = set(plan.sweep_keys)
    parser = OverridesParser.create()
    base = [a for a in plan.args if a.startswith("-") or "=" not in a
            or parser.parse_override(a).get_key_element() not in keys]
    if not plan.sweep_keys:  # a single run, not a sweep
        return [shlex.join(["python", "-m", "spafit_exp", *base])]
    order = [plan.sweep_values[k] for k in plan.sweep_keys]
    commands = []
    for grid in rectangles([job.swept for job in jobs], order):
        swept = [f"{key}={','.join(v.partition('=')[2] for v in values)}" for key, values in zip(plan.sweep_keys, grid)]
        commands.append(shlex.join(["python", "-m", "spafit_exp", "-m", *base, *swept]))
    return commands
