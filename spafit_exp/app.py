"""One run, end to end: validate -> (dry run | skip if done | data -> model -> method -> train -> results.json)."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from spafit_exp import results
from spafit_exp.config import ConfigError, validate

log = logging.getLogger("spafit_exp")

_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def run(cfg: DictConfig) -> dict | None:
    """Hydra task function body. Returns the results record (None for dry runs and skipped runs)."""
    directory = results.run_dir(cfg)
    try:
        validate(cfg)
        if cfg.trainer.precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("trainer.precision=fp16: needs a CUDA GPU; use bf16 or fp32 on CPU")
        if cfg.trainer.dry_run:
            dry_run(cfg)
            results.remove_empty_dirs(directory, Path(cfg.run.root))
            return None
        if results.is_completed(directory) and not cfg.run.force:
            print(f"skip: {directory} is completed (run.force=true to rerun)")
            return results.read(directory)
        return train_and_record(cfg, directory)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        results.remove_empty_dirs(directory, Path(cfg.run.root))
        sys.exit(2)


def dry_run(cfg: DictConfig) -> None:
    """Architecture on the meta device (no weights, works offline), method applied, parameter report."""
    from spafit_exp.methods import apply_method
    from spafit_exp.modeling import build_model
    from spafit_exp.params import report

    model = build_model(cfg.model, cfg.task, device="meta")
    prepared = apply_method(model, cfg.method)
    print(f"model={cfg.model.name} task={cfg.task.name} method={cfg.method.tag}")
    print(report(prepared.model))


def _accelerator(cfg: DictConfig):
    from accelerate import Accelerator

    log_with = None if cfg.tracking.mode == "disabled" else "wandb"
    return Accelerator(mixed_precision=_PRECISION[cfg.trainer.precision], gradient_accumulation_steps=cfg.trainer.grad_accum,
                       log_with=log_with)


def _start_tracking(accelerator, cfg: DictConfig) -> None:
    if cfg.tracking.mode == "disabled":
        return
    accelerator.init_trackers(
        cfg.tracking.project,
        config=OmegaConf.to_container(cfg, resolve=True),
        init_kwargs={"wandb": {"mode": cfg.tracking.mode, "group": cfg.tracking.group, "name": cfg.tracking.run_name,
                               "entity": cfg.tracking.entity, "dir": str(results.run_dir(cfg))}},
    )


def train_and_record(cfg: DictConfig, directory: Path) -> dict:
    from accelerate.utils import set_seed

    from spafit_exp.checkpoint import build_prepared, save_trainable
    from spafit_exp.data import load_task_data
    from spafit_exp.modeling import build_tokenizer
    from spafit_exp.params import count_params
    from spafit_exp.train import NonFiniteLoss, train

    started = time.time()
    set_seed(cfg.trainer.seed)
    accelerator = _accelerator(cfg)
    tokenizer = build_tokenizer(cfg.model)
    data = load_task_data(cfg, tokenizer)  # bad data raises ConfigError here, before anything is written
    prepared = build_prepared(cfg)  # seeded again: the head's init must not depend on what data loading consumed
    trainable, total = count_params(prepared.model)

    record = results.base_record(cfg)
    record.update(params={"trainable": trainable, "total": total, "fraction": trainable / total},
                  method_info=prepared.info, data={"train_rows": len(data.train),
                                                   "eval_rows": {k: len(v) for k, v in data.evals.items()}})
    if accelerator.is_main_process:
        results.write(directory, record)
    _start_tracking(accelerator, cfg)
    try:
        outcome = train(cfg, prepared, data, accelerator)
    except Exception as err:  # noqa: BLE001 - every failure becomes a record, then propagates
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=20),
                      failed_step=getattr(err, "step", None), timing={"wall_s": time.time() - started})
        if accelerator.is_main_process:
            results.write(directory, record)
        accelerator.end_training()
        if isinstance(err, NonFiniteLoss):
            log.error("run failed: %s", err)
        raise

    wall = time.time() - started
    record.update(
        status="completed",
        metrics={"epochs": outcome.epochs, "best": outcome.best},
        train={"steps": outcome.steps, "samples": outcome.train_samples, "losses": outcome.losses},
        timing={"wall_s": wall, "train_s": outcome.train_seconds,
                "train_samples_per_s": outcome.train_samples / max(outcome.train_seconds, 1e-9),
                "train_steps_per_s": outcome.steps / max(outcome.train_seconds, 1e-9)},
        device=str(accelerator.device),
    )
    if accelerator.is_main_process:
        if cfg.trainer.save_trainable and outcome.best_state:
            record["artifacts"] = {"trainable": save_trainable(outcome.best_state, directory)}
        results.write(directory, record)
    accelerator.end_training()
    best = outcome.best.get("dev", {})
    print(f"done: {directory} best epoch {outcome.best.get('epoch')} " + " ".join(f"{k}={v:.4f}" for k, v in best.items())
          + f" ({wall:.1f}s)")
    return record
