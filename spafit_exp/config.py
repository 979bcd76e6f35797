"""Config checks that run before any weights or data load: every violation is one line naming the key."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from spafit_exp import DATA_DIR
from spafit_exp.schema import register as register_schemas

register_schemas()

GROUPS = ("model", "task", "method", "selector", "lr_grid", "trainer", "tracking", "launcher", "experiment", "study")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("linear", "constant")
TRACKING_MODES = ("disabled", "offline", "online")


class ConfigError(ValueError):
    """A bad config value or a missing file; the message is one line naming the key or path."""


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
        available = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
        for option in value.split(","):
            if option and option not in available:
                raise ConfigError(f"{key}={option}: no such {key}; choose from {', '.join(available)}")


def check_overrides_compose(argv: list[str]) -> None:
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
        compose(first)
    except HydraException as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        cause = str(err.__cause__).strip().splitlines()[0] if err.__cause__ else ""
        raise ConfigError(" ".join(lines[:1] + ([cause] if cause and cause not in lines[0] else []))) from None


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: must be {allowed}")


def data_dir(cfg: DictConfig) -> Path:
    return Path(cfg.data.dir).expanduser() if cfg.data.dir else DATA_DIR


def missing_data_message(path: Path, task: str) -> str:
    return (
        f"data file {path} not found (task={task}); get it with data.source=hub (needs the Hugging Face hub) "
        f"or point data.dir= at a glue_data folder that has it"
    )


def task_file(cfg: DictConfig, split: str) -> Path:
    """Path of a split's file: the first of the task's folders under data.dir that has it."""
    root = data_dir(cfg)
    candidates = [root / folder / cfg.task.files[split] for folder in cfg.task.folders]
    return next((p for p in candidates if p.is_file()), candidates[0])


def check_data_files(cfg: DictConfig) -> None:
    if cfg.data.source == "hub":
        return
    root = data_dir(cfg)
    if not root.is_dir():
        raise ConfigError(f"data.dir={root}: no such directory")
    for split in cfg.task.files:
        if split.startswith("test"):  # unlabelled GLUE test files are only needed for predictions
            continue
        path = task_file(cfg, split)
        if not path.is_file():
            raise ConfigError(missing_data_message(path, cfg.task.name))


def validate(cfg: DictConfig) -> None:
    """Cross-field checks on the composed config. Raises ConfigError on the first violation."""
    t = cfg.trainer
    if t.lr is None:  # trainer.lr defaults to method.lr; method=subset takes it from its selector
        raise ConfigError(f"trainer.lr: not set and method={cfg.method.name} selector={cfg.selector.name} recommends "
                          "no rate (method.lr); choose a selector or set trainer.lr=...")
    _require(isinstance(t.lr, (int, float)) and t.lr > 0, "trainer.lr", t.lr, "a number > 0")
    for key in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "log_every"):
        value = t[key]
        _require(isinstance(value, int) and value >= 1, f"trainer.{key}", value, "an integer >= 1")
    _require(isinstance(t.max_len, int) and 8 <= t.max_len <= cfg.model.arch.max_position_embeddings - 2,
             "trainer.max_len", t.max_len, f"an integer in [8, {cfg.model.arch.max_position_embeddings - 2}]")
    _require(0 <= t.warmup_ratio < 1, "trainer.warmup_ratio", t.warmup_ratio, "in [0, 1)")
    _require(t.weight_decay >= 0, "trainer.weight_decay", t.weight_decay, ">= 0")
    _require(t.adam_eps > 0, "trainer.adam_eps", t.adam_eps, "> 0")
    _require(t.max_grad_norm is None or t.max_grad_norm > 0, "trainer.max_grad_norm", t.max_grad_norm, "null or > 0")
    _require(t.precision in PRECISIONS, "trainer.precision", t.precision, f"one of {', '.join(PRECISIONS)}")
    _require(t.schedule in SCHEDULES, "trainer.schedule", t.schedule, f"one of {', '.join(SCHEDULES)}")
    _require(isinstance(t.seed, int), "trainer.seed", t.seed, "an integer")
    train_eval = t.get("eval_train_samples", 0)
    _require(isinstance(train_eval, int) and train_eval >= 0, "trainer.eval_train_samples", train_eval, "an integer >= 0")
    for key in ("max_train_samples", "max_eval_samples"):
        value = t[key]
        _require(value is None or (isinstance(value, int) and value >= 1), f"trainer.{key}", value, "null or an integer >= 1")
    _require(cfg.model.family in ("bert", "roberta"), "model.family", cfg.model.family, "bert or roberta")
    _require(cfg.model.init in ("pretrained", "random"), "model.init", cfg.model.init, "pretrained or random")
    _require(cfg.data.source in ("local", "hub"), "data.source", cfg.data.source, "local or hub")
    _require(cfg.tracking.mode in TRACKING_MODES, "tracking.mode", cfg.tracking.mode, f"one of {', '.join(TRACKING_MODES)}")
    if cfg.model.path and not str(cfg.model.path).startswith("pkg:") and not trainer_is_dry(cfg):
        _require(Path(cfg.model.path).expanduser().exists(), "model.path", cfg.model.path, "an existing directory")

    from spafit_exp.methods import get_method

    spec = get_method(cfg.method.name)  # raises ConfigError for an unknown name
    if spec.validate is not None:
        spec.validate(cfg.method, cfg.model.arch.num_hidden_layers)
    from spafit_exp.selectors import validate_selector

    validate_selector(cfg)
    if not trainer_is_dry(cfg):
        check_data_files(cfg)


def trainer_is_dry(cfg: DictConfig) -> bool:
    return bool(cfg.trainer.dry_run)



def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m spafit_exp <overrides>` would run, for scripts, notebooks and tests."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from spafit_exp import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=quote_path_values(list(overrides)))
