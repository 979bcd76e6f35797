"""What a run shows a researcher: a short header (what trains, on what, with which recipe, where the record
goes), quiet loading (no expected-noise reports from the libraries), an end-of-run summary, and a per-run log
file (`run.log`) holding the same lines, so a Slurm job's output is readable next to its record."""

from __future__ import annotations

import os
import resource
import sys
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import torch

from spafit_exp.core import commands, results
from spafit_exp.core.run_files import open_plain
from spafit_exp.core.spec import RunSpec
from spafit_exp.inputs.metrics import loss_falls
from spafit_exp.ops.params import ParamCounts

RUN_LOG = "run.log"


PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak_memory() -> bool:
    """Start this run's peak here: several runs share one process in a basic-launcher sweep, and the process's
    lifetime peak (ru_maxrss) would give every later run the largest earlier one's. Linux resets the peak resident
    size (VmHWM) when "5" is written to /proc/self/clear_refs; elsewhere (or where it is refused) the record says
    its peak is the process's (`memory.peak_scope`). Returns whether the reset took."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _vm_hwm() is not None


def _vm_hwm() -> int | None:
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_memory(device: torch.device, run_scope: bool = False) -> dict:
    """Peak resident memory (what a CPU run needs) — since `reset_peak_memory` when `run_scope` (the reset took),
    else of the whole process — plus the CUDA allocator's peaks on a GPU."""
    hwm = _vm_hwm() if run_scope else None
    memory = {"peak_bytes": hwm, "peak_scope": "run"} if hwm is not None else {
        "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
        "peak_scope": "process"}
    if device.type == "cuda":
        memory.update(cuda_max_allocated_bytes=torch.cuda.max_memory_allocated(device),
                      cuda_max_reserved_bytes=torch.cuda.max_memory_reserved(device))
    return memory


def step_percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {}
    return {"step_s_p50": float(np.percentile(seconds, 50)), "step_s_p90": float(np.percentile(seconds, 90))}


def summary(record: dict, directory: Path) -> str:
    """End-of-run lines: best dev scores, the loss trend, throughput, memory, time; a warning if the loss is flat."""
    best = record["metrics"]["best"]
    scores = " ".join(f"{k}={v:.4f}" for k, v in best.get("dev", {}).items()) \
        + "".join(f" test_{k}={v:.4f}" for k, v in (best.get("test") or {}).items())
    losses = record["train"]["losses"]
    trend = (f"train loss {losses[0][1]:.4f} -> {losses[-1][1]:.4f}" if len(losses) > 1
             else f"train loss {losses[0][1]:.4f} (one value logged)" if losses else "no train loss logged")
    lines = [f"done: best epoch {best.get('epoch')} {scores} | {trend} | "
             f"{record['timing']['train_samples_per_s']:.1f} samples/s | "
             f"peak {record['memory']['peak_bytes'] / 2**30:.2f} GiB | {record['timing']['wall_s']:.1f}s",
             f"record: {directory / results.RESULTS}"]
    cfg = record["config"]
    if len(losses) == 1:  # one value is no trend: neither "flat" nor "falling" can be told from it
        every = cfg["trainer"].get("log_every")
        lines.append(f"warning: one training loss was logged (step {losses[0][0]}"
                     + (f", trainer.log_every={every}" if every else "") + "): the loss trend is unknown")
    elif len(losses) >= 2 and not loss_falls(losses):
        # the run's own overrides (the options chosen, the model, ...) with only the rate swept: this run's sweep
        overrides = (cfg.get("run") or {}).get("overrides")
        sweep = commands.command(overrides, drop=("trainer.lr",), add=["lr_grid=logspaced"]) if overrides is not None \
            else "its command with -m lr_grid=logspaced and no trainer.lr (its record keeps no command line)"
        lines.append(f"warning: the training loss did not fall ({losses[0][1]:.4f} -> {losses[-1][1]:.4f}) at "
                     f"trainer.lr={cfg['trainer']['lr']:g}; sweep the rate: {sweep}")
    return "\n".join(lines)


def header(spec: RunSpec, counts: ParamCounts, train_rows: int, eval_rows: dict, device, processes: int,
           directory: Path) -> str:
    """A few aligned lines before training: what trains, on what, with which recipe, where the record goes."""
    t, model = spec.trainer, spec.model
    what = f"{counts.trainable:,} of {counts.total:,} parameters ({100 * counts.trainable / counts.total:.3f}%)"
    if counts.selected is not None:  # element-level methods: k elements of n candidates (+ head)
        per_step = counts.dense_trainable is not None  # drawn anew each step: any candidate may train over the run
        what += f"; {counts.selected:,} of {counts.candidates:,} candidate elements" + (" per step" if per_step else "")
    evals = ", ".join(f"{n:,} {split}" for split, n in eval_rows.items())
    schedule = f"{t.schedule}, warm-up {t.warmup_ratio:g}" if t.schedule == "linear" else t.schedule
    source = "random init" if model.init == "random" else (model.path or model.hub_id)
    if model.trust_remote_code:  # the model's own code ran: a record reader should see it
        source += "; trust_remote_code=true"
    rows = [("model", f"{model.name} ({source})"),
            ("task", f"{spec.task.name}: {train_rows:,} train, {evals} rows"),
            ("method", f"{spec.method.tag}: {what}"),
            ("recipe", f"lr {t.lr:g}, {t.epochs} epoch{'s' if t.epochs > 1 else ''}, batch {t.batch_size} x "
                       f"{t.grad_accum}, max_len {t.max_len}, AdamW wd {t.weight_decay:g}, {schedule}, "
                       f"clip {t.max_grad_norm}, seed {t.seed}"),
            ("precision", f"{t.precision}, {'unpadded' if t.unpad else 'padded'} encoder"),
            ("device", f"{device} x {processes} process{'es' if processes > 1 else ''}"),
            ("record", str(Path(directory) / results.RESULTS))]
    return "\n".join(f"{key:>9}  {value}" for key, value in rows)


class _Tee:
    """A text stream that also appends whole lines to a log file; progress-bar redraws (\\r) keep only their last
    state, and bars that clear themselves leave nothing."""

    def __init__(self, stream, log):
        self.stream, self.log, self.pending = stream, log, ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            line = line.split("\r")[-1]
            if line.strip() and self.log is not None:
                try:
                    self.log.write(line + "\n")
                    self.log.flush()
                except OSError:  # a full disk: the run goes on (and records its own failure) on the console alone
                    self.log = None
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding ... as the wrapped stream
        return getattr(self.stream, name)


@contextmanager
def logged_to(path: Path, enabled: bool = True):
    """Everything printed to stdout/stderr inside the block is also appended to `path` (run.log), which must be a
    plain file of the run's own (a planted link is refused: ConfigError)."""
    if not enabled:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    log = os.fdopen(open_plain(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8")
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        with suppress(OSError):  # a line a full disk refused is not worth hiding the run's own outcome for
            log.close()
