"""The training loop: one readable Accelerate loop that knows no method by name.

forward -> backward -> clip -> method hook -> optimizer/scheduler step; evaluate on every dev split after
each epoch; keep the trainable tensors of the best epoch (by the task's main metric)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from spafit_exp import metrics
from spafit_exp.data import TaskData
from spafit_exp.methods import Prepared

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, value: float):
        super().__init__(f"non-finite training loss {value} at optimizer step {step}")
        self.step = step


@dataclass
class TrainResult:
    epochs: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    train_seconds: float = 0.0
    train_samples: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)


def make_optimizer(model: torch.nn.Module, t: DictConfig) -> torch.optim.Optimizer:
    """AdamW over trainable tensors only; biases and LayerNorm weights get no weight decay (as in run_glue)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith(NO_DECAY) else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    if not groups:
        raise RuntimeError("the method left no trainable parameters")
    kwargs = dict(lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def make_scheduler(optimizer, t: DictConfig, total_steps: int):
    warmup = int(t.warmup_ratio * total_steps)
    if t.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def _metric_key(split: str, name: str) -> str:
    suffix = split[len("dev"):]  # "dev" -> "", "dev_mm" -> "_mm"
    return f"{name}{suffix}"


@torch.inference_mode()
def evaluate(model, loaders: dict[str, DataLoader], task: DictConfig, accelerator: Accelerator) -> dict[str, float]:
    model.eval()
    scores = {}
    for split, loader in loaders.items():
        logits, labels = [], []
        for batch in loader:
            gold = batch.pop("labels")
            out = model(**batch).logits
            if task.type == "token_classification":
                out = accelerator.pad_across_processes(out, dim=1)
                gold = accelerator.pad_across_processes(gold, dim=1, pad_index=-100)
            out, gold = accelerator.gather_for_metrics((out, gold))
            logits.append(out.float().cpu().numpy())
            labels.append(gold.cpu().numpy())
        for name, value in metrics.evaluate_split(task, logits, labels).items():
            scores[_metric_key(split, name)] = value
    model.train()
    return scores


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def train(cfg: DictConfig, prepared: Prepared, data: TaskData, accelerator: Accelerator) -> TrainResult:
    t, task = cfg.trainer, cfg.task
    generator = torch.Generator().manual_seed(t.seed)
    on_gpu = accelerator.device.type == "cuda"
    loader_kwargs = dict(collate_fn=data.collate, num_workers=cfg.data.num_workers, pin_memory=on_gpu)
    train_loader = DataLoader(data.train, batch_size=t.batch_size, shuffle=True, generator=generator, **loader_kwargs)
    eval_loaders = {s: DataLoader(ds, batch_size=t.eval_batch_size, **loader_kwargs) for s, ds in data.evals.items()}

    # Schedule length from the unsharded loader, as in accelerate's nlp_example (the prepared scheduler
    # steps once per process).
    steps_per_epoch = math.ceil(len(train_loader) / t.grad_accum)
    optimizer = make_optimizer(prepared.model, t)
    scheduler = make_scheduler(optimizer, t, steps_per_epoch * t.epochs)
    model, optimizer, train_loader, scheduler = accelerator.prepare(prepared.model, optimizer, train_loader, scheduler)
    eval_loaders = {split: accelerator.prepare(loader) for split, loader in eval_loaders.items()}
    trainable = [p for p in model.parameters() if p.requires_grad]

    result = TrainResult()
    main = task.main_metric
    running, running_n = torch.zeros((), device=accelerator.device), 0
    model.train()
    for epoch in range(1, t.epochs + 1):
        start = time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{t.epochs}", disable=not accelerator.is_local_main_process,
                   leave=False, dynamic_ncols=True)
        for batch in bar:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if t.max_grad_norm:
                        accelerator.clip_grad_norm_(trainable, t.max_grad_norm)
                    if prepared.before_step is not None:
                        prepared.before_step()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running += loss.detach()  # stays on device: no host sync per step
            running_n += 1
            result.train_samples += batch["input_ids"].shape[0] * accelerator.num_processes
            if accelerator.sync_gradients:
                result.steps += 1
                if result.steps % t.log_every == 0:
                    mean_loss = (running / running_n).item()
                    running.zero_()
                    running_n = 0
                    if not math.isfinite(mean_loss):
                        raise NonFiniteLoss(result.steps, mean_loss)
                    result.losses.append((result.steps, mean_loss))
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    accelerator.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0]}, step=result.steps)
        result.train_seconds += time.perf_counter() - start
        if running_n:
            mean_loss = (running / running_n).item()
            if not math.isfinite(mean_loss):
                raise NonFiniteLoss(result.steps, mean_loss)
            result.losses.append((result.steps, mean_loss))
            running.zero_()
            running_n = 0
        if not t.eval_every_epoch and epoch < t.epochs:
            continue
        dev = evaluate(model, eval_loaders, task, accelerator)
        row = {"epoch": epoch, "step": result.steps, "train_loss": result.losses[-1][1] if result.losses else None,
               "dev": dev}
        result.epochs.append(row)
        accelerator.log({f"dev/{k}": v for k, v in dev.items()} | {"epoch": epoch}, step=result.steps)
        accelerator.print(f"epoch {epoch}: " + " ".join(f"{k}={v:.4f}" for k, v in dev.items()))
        score = dev.get(main, float("nan"))
        best_score = result.best["dev"].get(main, float("nan")) if result.best else float("nan")
        if not result.best or (np.isfinite(score) and not score <= best_score):  # NaN best: any finite wins
            result.best = {"epoch": epoch, "dev": dev}
            result.best_state = trainable_state(accelerator.unwrap_model(model))
    return result
