"""One run, end to end: validate -> (dry run | skip if done | data -> model -> method -> train -> results.json)."""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list, parse_flag_from_env, set_seed
from omegaconf import DictConfig

from spafit_exp.core import results, timing
from spafit_exp.core.errors import ConfigError, RecipeMismatch, RunInterrupted
from spafit_exp.core.record import SkippedRecord
from spafit_exp.core.run_dir import Claim, RunDir
from spafit_exp.core.spec import RunSpec, plain
from spafit_exp.engine import tracking
from spafit_exp.engine.artefacts import save_trainable, seeded_model
from spafit_exp.engine.loop import StopRequested, TrainResult, train
from spafit_exp.engine.resume import drop_resume
from spafit_exp.engine.stops import graceful_stop
from spafit_exp.inputs.data import load_task_data
from spafit_exp.inputs.modeling import build_tokenizer, check_model_files
from spafit_exp.methods import Method, apply_method, get_method
from spafit_exp.ops.params import report
from spafit_exp.run.config import run_dir as directory_of
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
    directory = directory_of(cfg)
    try:
        spec = validate(cfg)  # the run's spec, resolved once: every layer below gets it or its pieces
        if spec.trainer.precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("trainer.precision=fp16: needs a CUDA GPU; use bf16 or fp32 on CPU")
        if spec.trainer.dry_run:
            dry_run(spec)
            results.remove_empty_dirs(directory, Path(spec.run.root))
            return None
        if spec.study.name != "none":  # studies read finished runs and write their own records
            results.remove_empty_dirs(directory, Path(spec.run.root))
            return run_study(spec)
    except ConfigError as err:
        _config_error(err, cfg, directory)
    try:
        group = _process_group()  # None for one process; rank 0 decides for all ranks of a distributed run
    except ConfigError as err:
        _config_error(err, cfg, directory)
    claim = None
    if group is None or group.is_main_process:  # the directory decides: skip, refuse, or run holding its lock
        claim = RunDir(directory).claim(
            plain(spec.run.fingerprint), force=bool(spec.run.force), resume=bool(spec.run.resume),
            ready=lambda: check_model_files(spec.model), files=(RUN_LOG,))  # a model that cannot load: before anything
    if group is not None:
        shared = [None if claim is None else claim.shared()]
        broadcast_object_list(shared, from_process=0)
        if claim is None:
            claim = Claim.from_shared(shared[0])
    if claim.action == "error":
        _config_error((RecipeMismatch if claim.mismatch else ConfigError)(claim.message), cfg, directory)
    if claim.action != "run":
        if claim.message:
            print(claim.message)
        skipped = claim.action == "skip" and claim.record is not None  # other ranks: rank 0 returns it
        return SkippedRecord(claim.record.to_json()) if skipped else None
    try:
        with logged_to(directory / RUN_LOG, enabled=group is None or group.is_main_process):
            return train_and_record(spec, directory, started, claim)
    except (ConfigError, results.WriteFailed) as err:  # bad data or a changed recipe found while loading, or a
        if isinstance(err, ConfigError) or not (directory / results.RESULTS).exists():  # full disk before any record:
            claim.undo(directory)  # leave nothing behind
        _config_error(err, cfg, directory)
    finally:
        claim.release()


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


def _config_error(err: ConfigError, cfg: DictConfig, directory: Path) -> None:
    results.remove_empty_dirs(directory, Path(cfg.run.root))
    raise err


def prepare(spec: RunSpec, device: str = "cpu") -> Method:
    """Seeded model -> decoder pre-tuning (`decoder.pretune`) -> selection stage (fixed-subset methods) -> method."""
    model = seeded_model(spec.model, spec.task, spec.trainer.seed, device=device)
    fixed_subset = get_method(spec.method.name).needs_selection
    with preserved_rng():  # a stage trains only when its cache misses: the run must not depend on which
        decoder = pretune_decoder(spec, model, fixed_subset)
        selection = run_selection(spec, model, decoder.get("decoder", "none")) if fixed_subset else None
    method = apply_method(model, spec.method, selection)
    method.info.update(decoder)
    return method


def dry_run(spec: RunSpec) -> None:
    """Architecture on the meta device (no weights, works offline), method applied, parameter report."""
    method = prepare(spec, device="meta")
    print(f"model={spec.model.name} task={spec.task.name} method={spec.method.tag}")
    print(report(method.model, method.counts()))


def _accelerator(spec: RunSpec):
    log_with = None if spec.tracking.mode == "disabled" else "wandb"
    return Accelerator(mixed_precision=_PRECISION[spec.trainer.precision],
                       gradient_accumulation_steps=spec.trainer.grad_accum, log_with=log_with)


def train_and_record(spec: RunSpec, directory: Path, started: float | None = None, claim: Claim | None = None) -> dict:
    started = timing.run_origin(time.time() if started is None else started)  # a process's first run: its start
    run_scope = reset_peak_memory()  # this run's peak, not an earlier run's of the same process
    set_seed(spec.trainer.seed)
    tokenizer = build_tokenizer(spec.model)
    data = load_task_data(spec, tokenizer)  # bad data raises ConfigError here, before anything is written
    method = prepare(spec)  # seeded again: the head's init must not depend on what data loading consumed
    accelerator = _accelerator(spec)  # after the selection stage, which runs its own short trainings
    counts = method.counts()  # element-level methods count elements, not tensors
    if spec.run.force or not spec.run.resume:
        drop_resume(directory)
    run_dir = RunDir(directory)
    earlier = run_dir.earlier_sessions_s() if run_dir.resumable else 0.0

    record = results.base_record(spec)
    record.update(params=counts.record(), method_info=method.info,
                  data={"train_rows": len(data.train),
                        "eval_rows": {k: len(v) for k, v in {**data.evals, **data.tests}.items()}},
                  timing={"earlier_sessions_s": earlier}, memory=peak_memory(accelerator.device, run_scope))
    main_process = accelerator.is_main_process
    if main_process:
        print(header(spec, counts, len(data.train), record.data["eval_rows"],
                     accelerator.device, accelerator.num_processes, directory), flush=True)
        run_dir.write(record, claim)
    tracking.start_tracking(accelerator, spec, directory)  # validation checked, before anything loaded, that it can start
    tracking.summarize(accelerator, spec.tracking, record.to_json())  # parameters, while it runs
    stop = None
    partial = TrainResult()  # the loop fills it as it goes: a failed run's record still has its phases
    try:
        with graceful_stop() as stop:
            outcome = train(spec, method, data, accelerator, checkpoint_dir=directory, stop=stop, started=started,
                            result=partial)
    except (Exception, KeyboardInterrupt) as err:  # every failure becomes a record, then propagates
        interrupted = isinstance(err, (StopRequested, KeyboardInterrupt))
        record.update(status="interrupted" if interrupted else "failed", error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc(limit=20), failed_step=getattr(err, "step", None),
                      timing=timing.record_timing(partial, started, earlier, None),
                      memory=peak_memory(accelerator.device, run_scope))
        if main_process:
            run_dir.write_if_possible(record, claim)
        tracking.summarize(accelerator, spec.tracking, record.to_json())
        accelerator.end_training()
        log.error("run %s: %s (%s)", record.status, err, directory)
        if interrupted:  # stop the whole sweep, not just this job
            signum = stop.signum if stop is not None else signal.SIGINT
            raise RunInterrupted(f"interrupted: {directory} (checkpoint kept: rerun the same command to resume)",
                                 int(signum)) from None
        raise

    if outcome.best_state:
        record.method_info.update(method.summarize(outcome.best_state))
    tokens = spec.trainer.epochs * sum(len(row["input_ids"]) for row in data.train)  # real tokens, padding excluded
    if outcome.early_stopped:  # the rows it trained on, at the mean row length
        tokens = round(tokens * outcome.train_samples / (spec.trainer.epochs * max(len(data.train), 1)))
    record.update(
        status="completed",
        # epochs and learning rates are chosen on the selection split; tables print the reported one
        metrics={"epochs": outcome.epochs, "best": outcome.best, "selection_split": "dev",
                 "reported_split": spec.task.report},
        train={"steps": outcome.steps, "samples": outcome.train_samples, "tokens": tokens, "losses": outcome.losses,
               "optimizer_state_bytes": outcome.optimizer_state_bytes, "early_stopped": outcome.early_stopped},
        timing={**timing.record_timing(outcome, started, earlier, tokens),
                **step_percentiles(outcome.step_seconds)},
        device=str(accelerator.device),
        memory=peak_memory(accelerator.device, run_scope),
    )
    if main_process:
        try:
            if spec.trainer.save_trainable and outcome.best_state:
                with timing.adding(outcome, "save_seconds"):
                    record.update(artifacts={"trainable": save_trainable(outcome.best_state, directory)})
                record.timing.update(timing.record_timing(outcome, started, earlier, tokens))
            run_dir.write(record, claim)
        except results.WriteFailed as err:  # a full disk: the record says failed, where it can still be written
            run_dir.write_if_possible(record.update(status="failed", error=f"WriteFailed: {err}"), claim)
            accelerator.end_training()
            raise
        drop_resume(directory)
    tracking.summarize(accelerator, spec.tracking, record.to_json())  # the best evaluation's scores, not the last logged
    accelerator.end_training()
    if main_process:
        print(summary(record.to_json(), directory))
    return record.to_json()

