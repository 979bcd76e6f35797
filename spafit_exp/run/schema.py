"""Typed schema of the trainer, data and decoder groups, registered in Hydra's ConfigStore: a misspelt key or a
value of the wrong type (`trainer.epochs=three`) fails while the config is composed, before anything loads. The schema
holds types only (every field MISSING); the values live once, in conf/trainer/default.yaml and conf/config.yaml.
Ranges and cross-field rules (lr > 0, SPAFIT groups vs the model's depth, k vs the candidate count) live in
`validation.validate`. Method and selector options differ per method and are checked by each method's own `validate`.

Hydra's `+key=value` adds a key to any node, typed or not, so the keys of every node with a fixed set of keys
(KEYED: these three, run, tracking, task, model, lr_grid) are checked again after composing (`unknown_key`)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Optional, get_args, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from spafit_exp.core.errors import ConfigError


@dataclass
class TrainerConfig:
    lr: Optional[float] = MISSING  # null only when the method recommends none (validate says so)
    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    max_len: int = MISSING
    weight_decay: float = MISSING
    adam_eps: float = MISSING
    adam_betas: list[float] = MISSING
    warmup_ratio: float = MISSING
    schedule: str = MISSING
    max_grad_norm: Optional[float] = MISSING
    grad_accum: int = MISSING
    precision: str = MISSING
    unpad: bool = MISSING
    group_by_length: bool = MISSING
    compile: bool = MISSING
    seed: int = MISSING
    eval_every_epoch: bool = MISSING
    eval_every: Optional[int] = MISSING  # optimizer steps between evaluations; null = per epoch (eval_every_epoch)
    early_stopping_patience: Optional[int] = MISSING  # evaluations without a better dev main metric; null = off
    max_train_samples: Optional[int] = MISSING
    max_eval_samples: Optional[int] = MISSING
    eval_train_samples: int = MISSING
    log_every: int = MISSING
    detect_anomaly: bool = MISSING
    dry_run: bool = MISSING
    save_trainable: bool = MISSING
    checkpoint_every: int = MISSING


@dataclass
class DecoderConfig:
    """Decoder pre-tuning (subset paper, Appendix A Table 4): the head alone on the frozen encoder, before the
    method trains. pretune: null = for fixed-subset methods only, true = every method, false = never."""

    pretune: Optional[bool] = MISSING
    stage_seed: str = MISSING  # shared | run (spafit_exp/inputs/data.py: stage_seed)
    epochs: int = MISSING
    lr: float = MISSING
    batch_size: int = MISSING
    max_grad_norm: float = MISSING
    warmup_ratio: float = MISSING


@dataclass
class DataConfig:
    source: str = MISSING
    dir: Optional[str] = MISSING
    cache_dir: Optional[str] = MISSING
    num_workers: int = MISSING


# The groups below are not registered with Hydra (their values keep the YAMLs' own types): only their keys are
# checked, by `unknown_key` after composing. A key added to one of their YAMLs must be added here too.
@dataclass
class RunConfig:
    root: str = MISSING
    force: bool = MISSING
    overrides: Optional[list[str]] = MISSING  # set by the run itself (spafit_exp/core/commands.py)
    resume: bool = MISSING
    dir: str = MISSING


@dataclass
class TrackingConfig:
    mode: str = MISSING
    project: str = MISSING
    entity: Optional[str] = MISSING
    group: str = MISSING
    run_name: str = MISSING


@dataclass
class HubConfig:
    path: str = MISSING
    name: Optional[str] = MISSING
    text_fields: list[str] = MISSING
    label_field: str = MISSING
    splits: dict = MISSING  # split -> the hub's split name (open: a task may have more splits)


@dataclass
class HoldoutConfig:
    fraction: float = MISSING
    seed: int = MISSING


@dataclass
class TaskConfig:
    name: str = MISSING
    display: str = MISSING
    type: str = MISSING
    reader: str = MISSING
    folders: list[str] = MISSING
    files: dict = MISSING  # split -> file name (open)
    header: bool = MISSING
    columns: Optional[list[str]] = MISSING
    text_fields: list[str] = MISSING
    label_field: str = MISSING
    labels: Optional[list[str]] = MISSING
    num_labels: int = MISSING
    metrics: list[str] = MISSING
    main_metric: str = MISSING
    report: str = MISSING
    dev_holdout: Optional[HoldoutConfig] = MISSING
    batch_size: int = MISSING
    hub: HubConfig = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = MISSING
    hub_id: Optional[str] = MISSING
    path: Optional[str] = MISSING
    tokenizer: Optional[str] = MISSING
    init: str = MISSING
    trust_remote_code: bool = MISSING
    head: str = MISSING
    arch: dict = MISSING  # keyword arguments of the family's transformers config (validation checks their names)


@dataclass
class LrGridConfig:
    name: str = MISSING
    values: list[float] = MISSING


KEYED = {"trainer": TrainerConfig, "data": DataConfig, "decoder": DecoderConfig, "run": RunConfig,
         "tracking": TrackingConfig, "task": TaskConfig, "model": ModelConfig, "lr_grid": LrGridConfig}


def _nested(hint: Any) -> type | None:
    """The dataclass a field holds (itself, or inside Optional[...]), else None."""
    for candidate in (hint, *get_args(hint)):
        if is_dataclass(candidate):
            return candidate
    return None


def unknown_key(node: DictConfig, schema: type, where: str) -> ConfigError | None:
    """The first key of `node` (nested dataclass fields included) that `schema` does not have, as the one-line
    error to raise: `trainer.epoch: no such key; did you mean trainer.epochs?`. None when every key is known."""
    hints = get_type_hints(schema)
    allowed = [f.name for f in fields(schema)]
    for key in node.keys():
        key = str(key)
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean {where}.{close[0]}?" if close else f"{where} has {', '.join(allowed)}"
            return ConfigError(f"{where}.{key}: no such key; {hint}")
        inner = _nested(hints.get(key))
        if inner is not None and not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
            found = unknown_key(node[key], inner, f"{where}.{key}")
            if found is not None:
                return found
    return None


def register() -> None:
    """Idempotent; called before any compose (the CLI and `config.compose`)."""
    store = ConfigStore.instance()
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    store.store(name="data_schema", node={"data": DataConfig}, package="_global_")
    store.store(name="decoder_schema", node={"decoder": DecoderConfig}, package="_global_")
