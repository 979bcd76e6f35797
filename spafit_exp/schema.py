"""Typed schema of the trainer and data groups, registered in Hydra's ConfigStore: a misspelt key or a value of
the wrong type (`trainer.epochs=three`) fails while the config is composed, before anything loads. Ranges and
cross-field rules (lr > 0, SPAFIT groups vs the model's depth, k vs the candidate count) live in `config.validate`.
Method and selector options differ per method and are checked by each method's own `validate`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class TrainerConfig:
    lr: float = 2.0e-5
    epochs: int = 3
    batch_size: int = 32  # the YAML interpolates the task's batch size
    eval_batch_size: int = 32
    max_len: int = 128
    weight_decay: float = 0.01
    adam_eps: float = 1.0e-8
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: float = 0.0
    schedule: str = "linear"
    max_grad_norm: Optional[float] = 1.0
    grad_accum: int = 1
    precision: str = "fp32"
    seed: int = 1
    eval_every_epoch: bool = True
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    eval_train_samples: int = 1000
    log_every: int = 20
    detect_anomaly: bool = False
    dry_run: bool = False
    save_trainable: bool = True
    checkpoint_every: int = 200


@dataclass
class DataConfig:
    source: str = "local"
    dir: Optional[str] = None
    cache_dir: Optional[str] = None
    num_workers: int = 0


def register() -> None:
    """Idempotent; called before any compose (the CLI and `config.compose`)."""
    store = ConfigStore.instance()
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    store.store(name="data_schema", node={"data": DataConfig}, package="_global_")
