"""Composing a run's config: the command line's overrides checked and quoted, Hydra's compose for scripts and
tests. Whole-run validation (ranges, cross-field rules, each method's and selector's own options) is
validation.py's; this module knows no method."""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from spafit_exp.core.commands import key_of
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.results import check_writable
from spafit_exp.core.safe_paths import check_component, is_within
from spafit_exp.run import packing
from spafit_exp.run.schema import KEYED, unknown_key
from spafit_exp.run.schema import register as register_schemas  # noqa: I001

register_schemas()
packing.register()  # ${spafit.cores:} in conf/launcher/local.yaml

GROUPS = ("model", "task", "method", "selector", "lr_grid", "trainer", "tracking", "launcher", "experiment", "study")
# Top-level keys of a composed config: the groups' nodes (launcher and experiment have none) and config.yaml's own.
ROOT_KEYS = ("model", "task", "method", "selector", "lr_grid", "trainer", "tracking", "study", "data", "decoder", "run",
             "experiment_name")


def check_keys(cfg: DictConfig) -> None:
    """A key that no schema or YAML defines, added by a `+key=value` override (Hydra adds one to any node, typed or
    not), is one line naming it and its close match, not a run that silently carries it (and whose recipe then
    differs from the corrected command's). Method and selector options are their registries' (validation.py)."""
    for key in cfg.keys():
        if key not in ROOT_KEYS and key not in _global_keys():
            known = [*ROOT_KEYS, *_global_keys()]
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            raise ConfigError(f"{key}: no such key; " + (f"did you mean {close[0]}?" if close else
                                                         f"the top level has {', '.join(known)}"))
    for group, schema in KEYED.items():
        error = unknown_key(cfg[group], schema, group) if isinstance(cfg.get(group), DictConfig) else None
        if error is not None:
            raise error
    options = _study_options(str(cfg.study.name)) if isinstance(cfg.get("study"), DictConfig) else None
    for key in cfg.study.keys() if options is not None else ():
        if key not in options:
            close = difflib.get_close_matches(str(key), options, n=1, cutoff=0.6)
            raise ConfigError(f"study.{key}: no such key; " + (f"did you mean study.{close[0]}?" if close else
                                                               f"study={cfg.study.name} has {', '.join(options)}"))


@functools.cache
def _global_keys() -> tuple[str, ...]:
    """Top-level keys that `@package _global_` presets add besides the groups' nodes (e.g. epochs_by_task)."""
    from spafit_exp import CONF_DIR

    keys: set[str] = set()
    for path in sorted(CONF_DIR.glob("*/*.yaml")):
        if "@package _global_" in path.read_text().split("\n", 1)[0]:
            keys |= {str(k) for k in OmegaConf.load(path).keys()} - {"defaults", "hydra", *ROOT_KEYS}
    return tuple(sorted(keys))


@functools.cache
def _study_options(name: str) -> tuple[str, ...] | None:
    """A study's options are the keys its own YAML sets (studies have no typed schema); None for an unknown one."""
    from spafit_exp import CONF_DIR

    path = CONF_DIR / "study" / f"{name}.yaml"
    if not path.is_file():
        return None
    own = OmegaConf.load(path)
    node = own.study if isinstance(own.get("study"), DictConfig) else own
    return tuple(str(k) for k in node.keys() if k != "defaults")


def quote_path_values(argv: list[str]) -> list[str]:
    """Quote override values that contain `=`, such as run directories (`study.run=outputs/.../lr=5e-05/seed=1`):
    Hydra's grammar rejects a bare `=` in a value, and these paths come straight from our own run layout."""
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not arg.startswith("-") and sep and "=" in value and value[:1] not in "'\"" and "'" not in value:
            arg = f"{key}='{value}'"
        quoted.append(arg)
    return quoted


def check_group_overrides(argv: list[str], conf_dir: Path) -> None:
    """Reject `group=option` overrides naming an option that has no YAML file, before Hydra prints a page."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        if key not in GROUPS or not value or value == "null":
            continue
        available = sorted(p.stem for p in (conf_dir / key).glob("*.yaml") if not p.stem.startswith("_"))
        for option in value.split(","):
            if option and option not in available:
                raise ConfigError(f"{key}={option}: no such {key}; choose from {', '.join(available)}")


def check_overrides_compose(argv: list[str]) -> DictConfig:
    """Compose the first job of the command line (sweeps reduced to their first value) so that a misspelt key
    or a malformed override is one line here rather than a page from Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = [a for a in argv if not a.startswith("-") and "=" in a and not a.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        raise ConfigError(f"bad override: {str(err).strip().splitlines()[0]}") from None
    first = []
    for override in parsed:
        if override.value_type is None:  # deletion (~key)
            first.append(override.input_line)
            continue
        sweep = override.is_sweep_override()
        value = next(iter(override.sweep_string_iterator())) if sweep else override.get_value_element_as_str()
        first.append(f"{override.get_key_element()}={value}")
    try:
        cfg = compose(first)
    except HydraException as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        cause = str(err.__cause__).strip().splitlines()[0] if err.__cause__ else ""
        raise ConfigError(" ".join(lines[:1] + ([cause] if cause and cause not in lines[0] else []))) from None
    check_keys(cfg)
    return cfg


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run.dir)


PATH_KEYS = ("experiment_name", "task.name", "method.tag", "model.name")  # the folders of a run directory


def check_run_dir(cfg: DictConfig, writable: bool) -> None:
    """ConfigError (one line) unless each value naming a folder of run.dir is one safe folder name, run.dir
    resolves inside run.root (no `..`, no planted symbolic link leads out) and, if `writable`, the folder it is
    to be created in can be written (a read-only experiment folder is named before anything is created)."""
    for key in PATH_KEYS:
        check_component(key, OmegaConf.select(cfg, key))
    directory, root = Path(cfg.run.dir), Path(cfg.run.root)
    if not is_within(directory, root):
        raise ConfigError(f"run.dir={directory}: resolves outside run.root={root} (a symbolic link?); a run "
                          "writes only inside run.root")
    problem = check_writable(directory) if writable else None
    if problem:
        absolute = directory.expanduser().absolute()
        folder = next(p for p in [absolute, *absolute.parents] if p.exists())
        raise ConfigError(f"{folder}: cannot write there ({problem}), so the run directory "
                          f"{directory} cannot be written; make it writable or choose another run.root")


def _text(value) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def job_overrides(hydra_cfg: DictConfig, cfg: DictConfig) -> list[str]:
    """The overrides that make this run: Hydra's own (a sweep job's values), plus every key the config's sweeper
    would sweep (an experiment preset's tasks, selectors, seeds) pinned to this run's value, so that a `-m` command
    built from them runs this job's cell, not the preset's whole grid (spafit_exp/core/commands.py prints them)."""
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    given = {key_of(o) for o in overrides}
    choices = hydra_cfg.runtime.choices
    for key in OmegaConf.select(hydra_cfg, "sweeper.params") or {}:
        if key not in given:
            value = choices.get(key) if key in choices else OmegaConf.select(cfg, key)
            overrides.append(f"{key}={_text(value)}")
    return overrides


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m spafit_exp <overrides>` would run, for scripts, notebooks and tests."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from spafit_exp import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=quote_path_values(list(overrides)), return_hydra_config=True)
    cfg.run.overrides = job_overrides(cfg.hydra, cfg)  # what the commands a run prints repeat (spafit_exp.core.commands)
    with open_dict(cfg):
        del cfg["hydra"]  # as compose() without return_hydra_config: a run's config holds no Hydra settings
    return cfg
