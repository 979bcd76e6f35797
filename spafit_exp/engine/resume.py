"""Resume checkpoints (`resume.pt` in the run directory): everything the loop needs to continue bit-exactly —
trainable tensors, optimizer, scheduler, the loop's position and partial results, RNG state, and a method's own
state (a sampler's generator, DPS's Fisher window). Written atomically; the loop only calls save/restore.

Tensors and plain values only (the loop's position and result as dicts), read back with weights_only=True: a
resume.pt planted in a run directory runs no code. One that cannot be read (cut short, planted, of an older
format) is kept aside as resume.corrupt-<time>.pt with one warning and the run starts over."""

from __future__ import annotations

import sys
from dataclasses import dataclass, is_dataclass
from pathlib import Path

import torch
from accelerate.utils import gather_object

from spafit_exp.core.errors import RecipeMismatch
from spafit_exp.core.results import replace_atomically
from spafit_exp.core.run_dir import RESUME_FILE  # noqa: F401 - the loop's name for it (app reads it here)
from spafit_exp.core.run_files import set_aside
from spafit_exp.core.stored import drop_temps, load_tensors, reason
from spafit_exp.methods import Method
from spafit_exp.ops.params import trainable_state

_KEYS = ("trainable", "optimizer", "scheduler", "result", "position", "running", "rng")


@dataclass
class Position:
    """Where the loop is: `batch` batches of `epoch` are done; `epoch_generator` replays the epoch's shuffle."""

    epoch: int
    batch: int
    epoch_generator: torch.Tensor


def _plain(value):
    """A dataclass as a dict of its fields (tensors and plain values load with weights_only=True; classes do not)."""
    return dict(vars(value)) if is_dataclass(value) else value


def drop_resume(directory: Path) -> None:
    (Path(directory) / RESUME_FILE).unlink(missing_ok=True)


class Checkpointer:
    """Save / restore the loop's state for one run directory (None: checkpointing off). Only the main process
    writes; every process restores."""

    def __init__(self, directory: Path | None, accelerator, resume: bool = True, recipe: str | None = None):
        self.path = Path(directory) / RESUME_FILE if directory is not None else None
        self.recipe = recipe  # the run's fingerprint hash: a checkpoint of another recipe is never continued
        self.accelerator = accelerator
        self.resume = resume
        self.on_gpu = accelerator.device.type == "cuda"

    def save(self, model, optimizer, scheduler, method: Method | None, result, position: Position, running) -> None:
        """Called by every rank (the RNG states are gathered: each rank resumes with its own); rank 0 writes.
        `method`: whose `state_dict()` rides along (None, or a None state: nothing)."""
        if self.path is None:
            return
        rng = [torch.get_rng_state()]
        if self.accelerator.num_processes > 1:
            rng = gather_object(rng)
        if not self.accelerator.is_main_process:
            return
        state = {
            "trainable": trainable_state(self.accelerator.unwrap_model(model)), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "result": _plain(result), "position": _plain(position),
            "running": running,
            "method": method.state_dict() if method is not None else None,
            "rng": {"torch": rng, "cuda": torch.cuda.get_rng_state_all() if self.on_gpu else None},
            "fingerprint": self.recipe,
        }
        with replace_atomically(self.path) as tmp:
            torch.save(state, tmp)

    def restore(self, model, optimizer, scheduler, method: Method | None):
        """(the result's fields, position, running) of the saved loop, with tensors, optimizer, scheduler, method
        state and RNG put back; None when there is nothing to resume (or the checkpoint was unreadable)."""
        if self.path is None:
            return None
        if self.accelerator.is_main_process:  # the run's lock is held: a temp file here is a killed write's
            drop_temps(self.path.parent, exclusive=True)
        if not self.resume or not self.path.is_file():
            return None
        saved = self._read()
        if saved is None:
            return None
        if self.recipe is not None and saved.get("fingerprint") not in (None, self.recipe):
            raise RecipeMismatch(f"{self.path}: written by a run with a different recipe; run.resume=false or "
                                 f"run.force=true to start over")
        own = dict(self.accelerator.unwrap_model(model).named_parameters())
        for name, tensor in saved["trainable"].items():
            own[name].data.copy_(tensor)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if method is not None and saved.get("method") is not None:
            method.load_state_dict(saved["method"])
        states = saved["rng"]["torch"]  # one per rank (a single tensor in checkpoints of older versions)
        self.rng_state = states[self.accelerator.process_index] if isinstance(states, list) else states
        if self.on_gpu and saved["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        torch.set_rng_state(self.rng_state)
        position = saved["position"]
        return saved["result"], Position(**position) if isinstance(position, dict) else position, saved["running"]

    def _read(self) -> dict | None:
        try:
            saved = load_tensors(self.path)
            if not isinstance(saved, dict) or not all(k in saved for k in _KEYS):
                raise ValueError("not a resume checkpoint of this version")
            return saved
        except FileNotFoundError:  # another rank set it aside first
            return None
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: keep it, start over
            if self.accelerator.is_main_process:
                kept = set_aside(self.path)
                print(f"warning: {self.path}: unreadable checkpoint ({reason(err)}); kept as {kept.name}, the run "
                      "starts over", file=sys.stderr)
            return None

    def resume_rng(self) -> None:
        """Set the saved RNG state again just before the first batch a mid-epoch resume trains: creating the epoch's
        data iterator draws a seed from the global generator, which the interrupted run had drawn before it saved."""
        if getattr(self, "rng_state", None) is not None:
            torch.set_rng_state(self.rng_state)
            self.rng_state = None


def read_resume(directory: Path) -> dict | None:
    """The raw resume checkpoint of a run directory (None if there is none): for inspection and tests."""
    path = Path(directory) / RESUME_FILE
    return load_tensors(path) if path.is_file() else None
