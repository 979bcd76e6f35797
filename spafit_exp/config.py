"""Composing a run's config: the command line's overrides checked and quoted, Hydra's compose for scripts and
tests. Whole-run validation (ranges, cross-field rules, each method's and selector's own options) is
validation.py's; this module knows no method."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from spafit_exp.errors import ConfigError
from spafit_exp.schema import register as register_schemas  # noqa: I001

register_schemas()

GROUPS = ("model", "task", "method", "selector", "lr_grid", "trainer", "tracking", "launcher", "experiment", "study")


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
        return compose(first)
    except HydraException as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        cause = str(err.__cause__).strip().splitlines()[0] if err.__cause__ else ""
        raise ConfigError(" ".join(lines[:1] + ([cause] if cause and cause not in lines[0] else []))) from None


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m spafit_exp <overrides>` would run, for scripts, notebooks and tests."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from spafit_exp import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=quote_path_values(list(overrides)))
