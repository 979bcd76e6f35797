"""Whole-run validation, before any weights or data load: trainer, model and data settings, then each
registered method and selector checks its own typed options. Every violation is one line naming the key."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from spafit_exp.errors import ConfigError
from spafit_exp.methods import get_method, validate_method
from spafit_exp.readers import check_data_files
from spafit_exp.selectors import SELECTORS, validate_selector

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("linear", "constant")
TRACKING_MODES = ("disabled", "offline", "online")


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: must be {allowed}")


def validate(cfg: DictConfig) -> None:
    """Cross-field checks on the composed config. Raises ConfigError on the first violation."""
    t = cfg.trainer
    validate_method(cfg.method, cfg.model.arch.num_hidden_layers)  # unknown name, typed options, ranges
    needs_selection = get_method(cfg.method.name).needs_selection
    if needs_selection and cfg.selector.name == "none":
        raise ConfigError(f"method={cfg.method.name} trains a selected subset: choose selector="
                          f"{'|'.join(SELECTORS.names())}")
    if cfg.selector.name != "none":
        if not needs_selection:
            raise ConfigError(f"selector={cfg.selector.tag}: only method=subset uses a selector; method="
                              f"{cfg.method.name} would ignore it (drop selector= or use method=subset)")
        validate_selector(cfg.selector)
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

    if not trainer_is_dry(cfg):
        check_data_files(cfg)


def trainer_is_dry(cfg: DictConfig) -> bool:
    return bool(cfg.trainer.dry_run)
