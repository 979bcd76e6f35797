"""The training loop: one readable Accelerate loop that knows no method by name.

forward -> backward -> clip -> method hook -> optimizer/scheduler step; evaluate on every dev split after
each epoch (or every `trainer.eval_every` optimizer steps and at the end); keep the trainable tensors of the best
evaluation (by the task's main metric); stop after `trainer.early_stopping_patience` evaluations without a better
one; score the first `trainer.eval_train_samples` training rows once, with the best evaluation's tensors."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.trainer_pt_utils import LengthGroupedSampler

from spafit_exp.core.errors import ConfigError
from spafit_exp.core.spec import RunSpec
from spafit_exp.core.timing import adding
from spafit_exp.engine.evaluation import evaluate
from spafit_exp.engine.resume import Checkpointer, Position
from spafit_exp.inputs.data import TaskData
from spafit_exp.methods import Method
from spafit_exp.ops import unpad
from spafit_exp.ops.optim import make_scheduler, optimizer_state_bytes


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, value: float):
        super().__init__(f"non-finite training loss {value} at optimizer step {step}")
        self.step, self.value = step, value

    def __reduce__(self):  # submitit pickles a job's exception back to the launcher
        return NonFiniteLoss, (self.step, self.value)


@dataclass
class TrainResult:
    epochs: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    train_seconds: float = 0.0  # the loop alone: evaluations and saves inside it are eval/save_seconds
    setup_seconds: float = 0.0  # the run's start -> its first training batch (spafit_exp/core/timing.py)
    eval_seconds: float = 0.0
    save_seconds: float = 0.0  # resume checkpoints and the best epoch's tensors
    train_samples: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)  # wall time of each optimizer step (host clock)
    optimizer_state_bytes: int = 0
    early_stopped: bool = False  # trainer.early_stopping_patience ended the run before its last epoch


class StopRequested(RuntimeError):
    """SIGINT/SIGTERM arrived: a checkpoint was written at the last optimizer step."""

    def __init__(self, step: int):
        super().__init__(f"interrupted at optimizer step {step}")
        self.step = step


@contextmanager
def unpadded(model, enabled: bool):
    """`unpad.applied`, its refusal named after the setting that asked for it (a one-line config error)."""
    if enabled:
        try:
            unpad.check(model)
        except ValueError as err:
            raise ConfigError(f"trainer.unpad: {err}; set trainer.unpad=false") from None
    with unpad.applied(model, enabled):
        yield model


def train(spec: RunSpec, method: Method, data: TaskData, accelerator: Accelerator,
          checkpoint_dir=None, stop=lambda: False, started: float | None = None,
          result: TrainResult | None = None) -> TrainResult:
    """Train and evaluate. With `checkpoint_dir`, a resume checkpoint is written every `trainer.checkpoint_every`
    optimizer steps, after each epoch and when `stop()` turns true; an existing one is continued from (`run.resume`)
    when it was written under the same recipe (`run.fingerprint`, the spec's: computed once, when it was resolved).
    With `trainer.unpad` the encoder skips padding tokens (same maths, see spafit_exp/ops/unpad.py).
    `started` (time.time()): when the run's clock started; the time up to the first batch is its set-up.
    `result`: filled in place as the run goes, so a caller whose run failed still has its phases so far."""
    with unpadded(method.model, spec.trainer.unpad):
        return _train(spec, method, data, accelerator, checkpoint_dir, stop, started,
                      TrainResult() if result is None else result)


def _train(spec: RunSpec, method: Method, data: TaskData, accelerator: Accelerator,
           checkpoint_dir, stop, started, result: TrainResult) -> TrainResult:
    t, task = spec.trainer, spec.task
    generator = torch.Generator().manual_seed(t.seed)
    loader_kwargs = {"collate_fn": data.collate, "num_workers": spec.data.num_workers,
                     "pin_memory": accelerator.device.type == "cuda"}
    # Length-grouped batches (HF's sampler: shuffled mega-batches sorted by length) pad less but change which rows
    # share a batch, so it is off by default.
    sampler = (LengthGroupedSampler(t.batch_size, lengths=[len(row["input_ids"]) for row in data.train],
                                    generator=generator) if t.group_by_length else None)
    train_loader = DataLoader(data.train, batch_size=t.batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=generator, **loader_kwargs)
    eval_loaders = {s: DataLoader(ds, batch_size=t.eval_batch_size, **loader_kwargs) for s, ds in data.evals.items()}
    # Reported test splits are scored with dev at every evaluation but never choose the epoch (selection: dev only)
    test_loaders = {s: DataLoader(ds, batch_size=t.eval_batch_size, **loader_kwargs) for s, ds in data.tests.items()}
    # The first rows of the training set, scored like dev: the train/test gap of the generality study.
    train_rows = data.train[: t.eval_train_samples] if t.eval_train_samples else []
    train_eval = DataLoader(train_rows, batch_size=t.eval_batch_size, **loader_kwargs) if train_rows else None

    # Schedule length from the unsharded loader, as in accelerate's nlp_example (the prepared scheduler
    # steps once per process).
    steps_per_epoch = math.ceil(len(train_loader) / t.grad_accum)
    optimizer = method.make_optimizer(t)
    if t.compile:  # in place: parameter names, hooks and saved state stay those of the eager model
        method.model.compile(dynamic=True)
    scheduler = make_scheduler(optimizer, t, steps_per_epoch * t.epochs)
    method.on_schedule(steps_per_epoch * t.epochs)
    model, optimizer, train_loader, scheduler = accelerator.prepare(method.model, optimizer, train_loader, scheduler)
    eval_loaders = {split: accelerator.prepare(loader) for split, loader in eval_loaders.items()}
    test_loaders = {split: accelerator.prepare(loader) for split, loader in test_loaders.items()}
    train_eval = {"dev": accelerator.prepare(train_eval)} if train_eval is not None else {}
    trainable = [p for p in model.parameters() if p.requires_grad]

    position = Position(1, 0, generator.get_state())
    running, running_n = torch.zeros((), device=accelerator.device), 0
    recipe = spec.run.fingerprint["hash"] if checkpoint_dir is not None else None  # sub-runs keep no checkpoint
    checkpointer = Checkpointer(checkpoint_dir, accelerator, resume=spec.run.resume, recipe=recipe)
    restored = checkpointer.restore(model, optimizer, scheduler, method)
    if restored is not None:
        fields, position, (loss_sum, running_n) = restored
        # saved as a dict (a checkpoint holds no pickled classes); in place: the caller holds `result`
        vars(result).update(vars(TrainResult(**fields)))
        running += loss_sum
        accelerator.print(f"resumed at epoch {position.epoch}, batch {position.batch}, step {result.steps}")

    def checkpoint(epoch: int, batch: int, epoch_generator: torch.Tensor) -> None:
        with adding(result, "save_seconds"):
            checkpointer.save(model, optimizer, scheduler, method, result,
                              Position(epoch, batch, epoch_generator), (running.item(), running_n))

    def scores() -> tuple[dict, dict]:
        """(dev, test) scores of the model as it is now. The training rows are scored once, at the end."""
        with adding(result, "eval_seconds"):
            scored = evaluate(model, eval_loaders, task, accelerator), evaluate(model, test_loaders, task, accelerator)
        if train_eval:  # the draw their loader's iteration took (its base seed): dropout's stream stays the same
            torch.empty((), dtype=torch.int64).random_()
        return scored

    def keep_best(best: dict) -> None:
        """The best epoch so far, with a host copy of its trainable tensors (counted as saving)."""
        result.best = {**best, "train": {}}
        with adding(result, "save_seconds"):
            result.best_state = method.export_state(accelerator.unwrap_model(model))

    def score_train_rows() -> None:
        """The first `eval_train_samples` training rows, scored with the best evaluation's tensors (only the best's
        train scores are kept: the train/test gap): swapped in and back, so the model leaves as it trained."""
        if not train_eval or not result.best:
            return
        unwrapped, swap = accelerator.unwrap_model(model), result.best["step"] != result.steps
        if swap:
            with adding(result, "save_seconds"):
                final = method.export_state(unwrapped)
                method.import_state(unwrapped, result.best_state)
        with adding(result, "eval_seconds"), torch.random.fork_rng(devices=[]):  # after training: no draw taken
            result.best["train"] = evaluate(model, train_eval, task, accelerator)
        if swap:
            with adding(result, "save_seconds"):
                method.import_state(unwrapped, final)

    main, every, patience = task.main_metric, t.eval_every, t.early_stopping_patience

    def evaluation(epoch: float) -> bool:
        """Score the model now (`epoch`: training progress, whole at an epoch's end) and keep it if it is the best
        so far. True when the last `patience` evaluations have not bettered the best (early stopping)."""
        dev, test = scores()
        result.epochs.append({"epoch": epoch, "step": result.steps, "dev": dev, "test": test,
                              "train_loss": result.losses[-1][1] if result.losses else None})
        accelerator.log({f"dev/{k}": v for k, v in dev.items()} | {f"test/{k}": v for k, v in test.items()}
                        | {"epoch": epoch}, step=result.steps)
        accelerator.print((f"epoch {epoch}: " if isinstance(epoch, int) else f"step {result.steps} (epoch {epoch}): ")
                          + " ".join(f"{k}={v:.4f}" for k, v in dev.items())
                          + "".join(f" test_{k}={v:.4f}" for k, v in test.items()))
        score = dev.get(main, float("nan"))
        best_score = result.best["dev"].get(main, float("nan")) if result.best else float("nan")
        if not result.best or (np.isfinite(score) and not score <= best_score):  # NaN best: any finite wins
            keep_best({"epoch": epoch, "step": result.steps, "dev": dev, "test": test})
        # counted from the record itself, so a resumed run stops where the uninterrupted one would
        since_best = sum(row["step"] > result.best.get("step", -1) for row in result.epochs)
        return patience is not None and since_best >= patience

    if started is not None:  # this session's set-up (a resumed run's earlier ones came back with `result`)
        result.setup_seconds += max(0.0, time.time() - started)
    if method.evaluate_only:  # the prepared model is the result (e.g. diff pruning without retraining)
        dev, test = scores()
        result.epochs.append({"epoch": 0, "step": 0, "dev": dev, "test": test, "train_loss": None})
        keep_best({"epoch": 0, "step": 0, "dev": dev, "test": test})
        score_train_rows()
        return result
    model.train()
    for epoch in range(position.epoch, t.epochs + 1):
        skip = 0
        if epoch == position.epoch:  # replay this epoch's shuffle (a no-op on a fresh start)
            generator.set_state(position.epoch_generator)
            skip = position.batch
        epoch_generator = generator.get_state()
        start = time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{t.epochs}", disable=not accelerator.is_local_main_process,
                   leave=False, dynamic_ncols=True, initial=skip)
        step_start = time.perf_counter()
        for index, batch in enumerate(bar):
            if index < skip:  # replaying the shuffle up to the checkpoint: cheap, no forward
                step_start = time.perf_counter()
                continue
            if index == skip > 0:  # resumed mid-epoch: the RNG continues exactly where the interrupted run saved it
                checkpointer.resume_rng()
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if t.max_grad_norm:
                        accelerator.clip_grad_norm_(trainable, t.max_grad_norm)
                    method.before_step()
                optimizer.step()
                if accelerator.sync_gradients:
                    method.after_step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running += loss.detach()  # stays on device: no host sync per step
            running_n += 1
            result.train_samples += batch["input_ids"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            result.steps += 1
            now = time.perf_counter()
            result.step_seconds.append(now - step_start)  # includes data loading; no device sync
            step_start = now
            if t.detect_anomaly or result.steps % t.log_every == 0:  # a host sync: not every step by default
                mean_loss = (accelerator.reduce(running, reduction="mean") / running_n).item()  # over ranks
                running.zero_()
                running_n = 0
                if not math.isfinite(mean_loss):
                    raise NonFiniteLoss(result.steps, mean_loss)
                result.losses.append((result.steps, mean_loss))
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                accelerator.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0]}, step=result.steps)
            if every and result.steps % every == 0:  # before a checkpoint of this step: it must hold the evaluation
                result.train_seconds += time.perf_counter() - start
                progress = round(epoch - 1 + (index + 1) / len(train_loader), 4)
                stopping = evaluation(int(progress) if progress == int(progress) else progress)
                start = step_start = time.perf_counter()
                if stopping:  # (on the run's last batch it ends as planned)
                    result.early_stopped = epoch < t.epochs or index + 1 < len(train_loader)
                    break
            if stop() or (t.checkpoint_every and result.steps % t.checkpoint_every == 0):
                result.train_seconds += time.perf_counter() - start
                start = time.perf_counter()
                checkpoint(epoch, index + 1, epoch_generator)
                if stop():
                    raise StopRequested(result.steps)
        result.train_seconds += time.perf_counter() - start
        if running_n:
            mean_loss = (accelerator.reduce(running, reduction="mean") / running_n).item()  # over ranks
            if not math.isfinite(mean_loss):
                raise NonFiniteLoss(result.steps, mean_loss)
            result.losses.append((result.steps, mean_loss))
            running.zero_()
            running_n = 0
        if result.early_stopped:
            break
        # trainer.eval_every replaces the per-epoch evaluations; the end is evaluated once either way
        last = epoch == t.epochs and not (result.epochs and result.epochs[-1]["step"] == result.steps)
        if ((t.eval_every_epoch and not every) or last) and evaluation(epoch) and epoch < t.epochs:
            result.early_stopped = True
            break
        if epoch < t.epochs:
            checkpoint(epoch + 1, 0, generator.get_state())
    if result.early_stopped:
        accelerator.print(f"early stopping at step {result.steps}: {patience} evaluation{'s' if patience > 1 else ''}"
                          f" without a better dev {main} (best: step {result.best['step']})")
    score_train_rows()
    result.optimizer_state_bytes = optimizer_state_bytes(optimizer)
    return result
