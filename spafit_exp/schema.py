"""Typed schema of the trainer and data groups, registered in Hydra's ConfigStore: a misspelt key or a value of
the wrong type (`trainer.epochs=three`) fails while the config is composed, before anything loads. The schema
holds types only (every field MISSING); the values live once, in conf/trainer/default.yaml and conf/config.yaml.
Ranges and cross-field rules (lr > 0, SPAFIT groups vs the model's depth, k vs the candidate count) live in
`config.validate`. Method and selector options differ per method and are checked by each method's own `validate`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


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
    stage_seed: str = MISSING  # shared | run (spafit_exp/data.py: stage_seed)
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


def register() -> None:
    """Idempotent; called before any compose (the CLI and `config.compose`)."""
    store = ConfigStore.instance()
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    store.store(name="data_schema", node={"data": DataConfig}, package="_global_")
    store.store(name="decoder_schema", node={"decoder": DecoderConfig}, package="_global_")
