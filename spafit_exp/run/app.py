"""One run, end to end: validate -> (dry run | skip if done | data -> model -> method -> train -> results.json)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list, parse_flag_from_env, set_seed
from omegaconf import DictConfig

from spafit_exp.core import fingerprint, results, timing
from spafit_exp.core.errors import ConfigError, RecipeMismatch, RunInterrupted
from spafit_exp.engine import tracking
from spafit_exp.engine.artefacts import save_trainable, seeded_model
from spafit_exp.engine.loop import StopRequested, train
from spafit_exp.engine.resume import RESUME_FILE, drop_resume
from spafit_exp.engine.stops import graceful_stop
from spafit_exp.inputs.data import load_task_data
from spafit_exp.inputs.modeling import build_tokenizer, check_model_files
from spafit_exp.methods import apply_method, get_method
from spafit_exp.ops.params import count_params, report
from spafit_exp.run.console import RUN_LOG, header, logged_to, peak_memory, reset_peak_memory, step_percentiles, summary
from spafit_exp.run.validation import validate
from spafit_exp.selection.stage import preserved_rng, pretune_decoder, run_selection
from spafit_exp.studies import run_study

log = logging.getLogger("spafit_exp")

_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def run(cfg: DictConfig) -> dict | None:
    """Hydra task function body. Returns the results record (None for dry runs and jobs owned elsewhere).
    Bad input raises ConfigError (one line) with nothing of the run left behind; `__main__` makes it exit 2."""
    started = time.time()
    directory = results.run_dir(cfg)
    try:
        validate(cfg)
        if cfg.trainer.precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("trainer.precision=fp16: needs a CUDA GPU; use bf16 or fp32 on CPU")
        if cfg.trainer.dry_run:
            dry_run(cfg)
            results.remove_empty_dirs(directory, Path(cfg.run.root))
            return None
        if cfg.study.name != "none":  # studies read finished runs and write their own records
            results.remove_empty_dirs(directory, Path(cfg.run.root))
            return run_study(cfg)
    except ConfigError as err:
        _config_error(err, cfg, directory)
    try:
        group = _process_group()  # None for one process; rank 0 decides for all ranks of a distributed run
    except ConfigError as err:
        _config_error(err, cfg, directory)
    claim = _claim(cfg, directory) if group is None or group.is_main_process else None
    if group is not None:
        shared = [None if claim is None else (claim.action, claim.message, None, None, (), claim.mismatch)]
        broadcast_object_list(shared, from_process=0)
        if claim is None:
            claim = Claim(*shared[0])
    if claim.action == "error":
        _config_error((RecipeMismatch if claim.mismatch else ConfigError)(claim.message), cfg, directory)
    if claim.action != "run":
        if claim.message:
            print(claim.message)
        return claim.record if claim.action == "skip" else None
    try:
        with logged_to(directory / RUN_LOG, enabled=group is None or group.is_main_process):
            return train_and_record(cfg, directory, started)
    except (ConfigError, results.WriteFailed) as err:  # bad data or a changed recipe found while loading, or a
        if isinstance(err, ConfigError) or not (directory / results.RESULTS).exists():  # full disk before any record:
            claim.undo(directory)  # leave nothing behind
        _config_error(err, cfg, directory)
    finally:
        results.release_lock(claim.lock)


def _process_group():
    """The distributed state when launched as several processes (accelerate launch / torchrun), else None. A
    launch whose processes did not join one process group would run the same job several times over one record."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return None
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as Accelerator() will read it
    if state.num_processes != world:
        raise ConfigError(f"launched as {world} processes (WORLD_SIZE={world}) that did not join one process group "
                          f"(found {state.num_processes}); on a machine without GPUs set ACCELERATE_USE_CPU=true "
                          "or pass --cpu to accelerate launch")
    return state


@dataclass
class Claim:
    """Rank 0's decision for a run directory: run it (holding the lock), skip it, or refuse it."""

    action: str  # run | skip | busy | error
    message: str = ""
    record: dict | None = None
    lock: object = None
    created: tuple[str, ...] = ()  # files this claim created (removed again if the run is refused while loading)
    mismatch: bool = False  # refused because the directory holds another recipe (in a sweep: this job only)

    def undo(self, directory: Path) -> None:
        for name in self.created:
            (directory / name).unlink(missing_ok=True)


def _claim(cfg: DictConfig, directory: Path) -> Claim:
    try:
        previous = _previous(cfg, directory, locked=False)
        if previous is not None:
            return Claim("skip", f"skip: {directory} is completed (run.force=true to rerun)", previous)
        check_model_files(cfg.model)  # a model folder that cannot load: one line, before anything is created
        created = tuple(n for n in (results.LOCK, RUN_LOG) if not os.path.lexists(directory / n))  # a link is not ours
        lock = results.acquire_lock(directory)
        if lock is None:
            return Claim("busy", f"skip: {directory} is being run by another process")
        try:
            previous = _previous(cfg, directory, locked=True)  # the directory may have changed while we waited
        except ConfigError:
            results.release_lock(lock)
            Claim("error", created=created).undo(directory)
            raise
        if previous is not None:
            results.release_lock(lock)
            return Claim("skip", f"skip: {directory} is completed (run.force=true to rerun)", previous)
        return Claim("run", lock=lock, created=created)
    except ConfigError as err:
        return Claim("error", str(err), mismatch=isinstance(err, RecipeMismatch))


def _previous(cfg: DictConfig, directory: Path, locked: bool) -> dict | None:
    """What the run directory already holds decides: a completed run of the same recipe is returned (skip); a
    completed or resumable run of another recipe is refused in one line; anything else is (re)run. Records a run
    replaces are moved aside, never deleted — only with the lock held."""
    try:
        record = results.read(directory)
    except results.CorruptRecord as err:
        if locked:
            kept = results.set_aside(directory, "corrupt")
            print(f"warning: {err}; kept as {kept.name}, the run is redone", file=sys.stderr)
        return None
    if record is None:
        return None
    if cfg.run.force:
        if locked:
            results.set_aside(directory, "replaced")
        return None
    old, new = record.get("fingerprint"), fingerprint.of(cfg)
    if old and old.get("hash") != new["hash"]:
        diffs = fingerprint.describe(fingerprint.differences(old.get("settings", {}), new["settings"]))
        resumable = cfg.run.resume and (directory / RESUME_FILE).is_file()
        if record.get("status") == "completed" or resumable:
            held = "a completed run" if record.get("status") == "completed" else "an unfinished run (resume.pt)"
            raise RecipeMismatch(f"{directory} holds {held} with a different recipe ({diffs}): use another "
                              f"experiment_name, or run.force=true to replace it")
        if locked:
            results.set_aside(directory, "replaced")
        return None
    if record.get("status") == "completed":
        return results.SkippedRecord(record)
    return None


def _config_error(err: ConfigError, cfg: DictConfig, directory: Path) -> None:
    results.remove_empty_dirs(directory, Path(cfg.run.root))
    raise err


def prepare(cfg: DictConfig, device: str = "cpu"):
    """Seeded model -> decoder pre-tuning (`decoder.pretune`) -> selection stage (fixed-subset methods) -> method."""
    model = seeded_model(cfg, device=device)
    fixed_subset = get_method(cfg.method.name).needs_selection
    with preserved_rng():  # a stage trains only when its cache misses: the run must not depend on which
        decoder = pretune_decoder(cfg, model, fixed_subset)
        selection = run_selection(cfg, model, decoder.get("decoder", "none")) if fixed_subset else None
    prepared = apply_method(model, cfg.method, selection)
    prepared.info.update(decoder)
    return prepared


def dry_run(cfg: DictConfig) -> None:
    """Architecture on the meta device (no weights, works offline), method applied, parameter report."""
    prepared = prepare(cfg, device="meta")
    print(f"model={cfg.model.name} task={cfg.task.name} method={cfg.method.tag}")
    text = report(prepared.model)
    if "trainable" in prepared.info:  # element-level subsets: the table shows tensors, the total counts elements
        summary = text.rsplit("\n", 1)[-1]
        total = summary.split("total_params=")[1]
        info = prepared.info
        notes = [f"selected elements: {info['k']} of {info['n']} candidates"] if "k" in info else []
        if "dense_trainable" in info:  # per-step selection: any element may train, one step updates `trainable`
            notes.append(f"dense_trainable={info['dense_trainable']} (trainable_params: elements one step updates)")
        text = "\n".join([text.rsplit("\n", 1)[0], *notes, f"trainable_params={info['trainable']} total_params={total}"])
    print(text)


def _accelerator(cfg: DictConfig):
    log_with = None if cfg.tracking.mode == "disabled" else "wandb"
    return Accelerator(mixed_precision=_PRECISION[cfg.trainer.precision], gradient_accumulation_steps=cfg.trainer.grad_accum,
                       log_with=log_with)


def train_and_record(cfg: DictConfig, directory: Path, started: float | None = None) -> dict:
    started = timing.run_origin(time.time() if started is None else started)  # a process's first run: its start
    run_scope = reset_peak_memory()  # this run's peak, not an earlier run's of the same process
    set_seed(cfg.trainer.seed)
    tokenizer = build_tokenizer(cfg.model)
    data = load_task_data(cfg, tokenizer)  # bad data raises ConfigError here, before anything is written
    prepared = prepare(cfg)  # seeded again: the head's init must not depend on what data loading consumed
    accelerator = _accelerator(cfg)  # after the selection stage, which runs its own short trainings
    trainable, total = count_params(prepared.model)
    trainable = prepared.info.get("trainable", trainable)  # element-level methods count elements, not tensors
    if cfg.run.force or not cfg.run.resume:
        drop_resume(directory)
    earlier = results.earlier_sessions_s(directory) if (directory / RESUME_FILE).is_file() else 0.0

    record = results.base_record(cfg)
    dense = {"dense_trainable": prepared.info["dense_trainable"]} if "dense_trainable" in prepared.info else {}
    record.update(params={"trainable": trainable, "total": total, "fraction": trainable / total, **dense},
                  method_info=prepared.info, data={"train_rows": len(data.train),
                                                   "eval_rows": {k: len(v) for k, v in {**data.evals, **data.tests}.items()}},
                  timing={"earlier_sessions_s": earlier}, memory=peak_memory(accelerator.device, run_scope))
    main_process = accelerator.is_main_process
    if main_process:
        print(header(cfg, trainable, total, prepared.info, len(data.train), record["data"]["eval_rows"],
                     accelerator.device, accelerator.num_processes, directory), flush=True)
        results.write(directory, record)
    tracking.start_tracking(accelerator, cfg, directory)  # validation checked, before anything loaded, that it can start
    tracking.summarize(accelerator, cfg, record)  # parameters, while it runs
    stop = None
    try:
        with graceful_stop() as stop:
            outcome = train(cfg, prepared, data, accelerator, checkpoint_dir=directory, stop=stop, started=started)
    except (Exception, KeyboardInterrupt) as err:  # every failure becomes a record, then propagates
        interrupted = isinstance(err, (StopRequested, KeyboardInterrupt))
        record.update(status="interrupted" if interrupted else "failed", error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc(limit=20), failed_step=getattr(err, "step", None),
                      timing={"wall_s": earlier + time.time() - started, "earlier_sessions_s": earlier},
                      memory=peak_memory(accelerator.device, run_scope))
        if main_process:
            results.write_if_possible(directory, record)
        tracking.summarize(accelerator, cfg, record)
        accelerator.end_training()
        log.error("run %s: %s (%s)", record["status"], err, directory)
        if interrupted:  # stop the whole sweep, not just this job
            signum = stop.signum if stop is not None else signal.SIGINT
            raise RunInterrupted(f"interrupted: {directory} (checkpoint kept: rerun the same command to resume)",
                                 int(signum)) from None
        raise

    if prepared.summarize is not None and outcome.best_state:
        record["method_info"].update(prepared.summarize(outcome.best_state))
    tokens = cfg.trainer.epochs * sum(len(row["input_ids"]) for row in data.train)  # real tokens, padding excluded
    if outcome.early_stopped:  # the rows it trained on, at the mean row length
        tokens = round(tokens * outcome.train_samples / (cfg.trainer.epochs * max(len(data.train), 1)))
    record.update(
        status="completed",
        # epochs and learning rates are chosen on the selection split; tables print the reported one
        metrics={"epochs": outcome.epochs, "best": outcome.best, "selection_split": "dev",
                 "reported_split": cfg.task.report},
        train={"steps": outcome.steps, "samples": outcome.train_samples, "tokens": tokens, "losses": outcome.losses,
               "optimizer_state_bytes": outcome.optimizer_state_bytes, "early_stopped": outcome.early_stopped},
        timing={**timing.record_timing(outcome, started, earlier, tokens),
                **step_percentiles(outcome.step_seconds)},
        device=str(accelerator.device),
        memory=peak_memory(accelerator.device, run_scope),
    )
    if main_process:
        try:
            if cfg.trainer.save_trainable and outcome.best_state:
                with timing.adding(outcome, "save_seconds"):
                    record["artifacts"] = {"trainable": save_trainable(outcome.best_state, directory)}
                record["timing"].update(timing.record_timing(outcome, started, earlier, tokens))
            results.write(directory, record)
        except results.WriteFailed as err:  # a full disk: the record says failed, where it can still be written
            results.write_if_possible(directory, {**record, "status": "failed", "error": f"WriteFailed: {err}"})
            accelerator.end_training()
            raise
        drop_resume(directory)
    tracking.summarize(accelerator, cfg, record)  # the best evaluation's scores, not the last logged
    accelerator.end_training()
    if main_process:
        print(summary(record, directory))
    return record

