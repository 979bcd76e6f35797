"""Resume checkpoints (`resume.pt` in the run directory): everything the loop needs to continue bit-exactly —
trainable tensors, optimizer, scheduler, the loop's position and partial results, RNG state, and a method's own
state (a sampler's generator, DPS's Fisher window). Written atomically; the loop only calls save/restore."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import gather_object

from spafit_exp.errors import RecipeMismatch
from spafit_exp.results import RESUME_FILE, replace_atomically  # noqa: F401 - RESUME_FILE: the loop's name for it


@dataclass
class Position:
    """Where the loop is: `batch` batches of `epoch` are done; `epoch_generator` replays the epoch's shuffle."""

    epoch: int
    batch: int
    epoch_generator: torch.Tensor


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


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

    def save(self, model, optimizer, scheduler, method_state, result, position: Position, running) -> None:
        """Called by every rank (the RNG states are gathered: each rank resumes with its own); rank 0 writes."""
        if self.path is None:
            return
        rng = [torch.get_rng_state()]
        if self.accelerator.num_processes > 1:
            rng = gather_object(rng)
        if not self.accelerator.is_main_process:
            return
        state = {
            "trainable": trainable_state(self.accelerator.unwrap_model(model)), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "result": result, "position": position, "running": running,
            "method": method_state.state_dict() if method_state is not None else None,
            "rng": {"torch": rng, "cuda": torch.cuda.get_rng_state_all() if self.on_gpu else None},
            "fingerprint": self.recipe,
        }
        with replace_atomically(self.path) as tmp:
            torch.save(state, tmp)

    def restore(self, model, optimizer, scheduler, method_state):
        """(result, position, running) of the saved loop, with tensors, optimizer, scheduler, method state and
        RNG put back; None when there is nothing to resume."""
        if self.path is None or not self.resume or not self.path.is_file():
            return None
        saved = torch.load(self.path, map_location="cpu", weights_only=False)
        if self.recipe is not None and saved.get("fingerprint") not in (None, self.recipe):
            raise RecipeMismatch(f"{self.path}: written by a run with a different recipe; run.resume=false or "
                                 f"run.force=true to start over")
        own = dict(self.accelerator.unwrap_model(model).named_parameters())
        for name, tensor in saved["trainable"].items():
            own[name].data.copy_(tensor)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if method_state is not None and saved.get("method") is not None:
            method_state.load_state_dict(saved["method"])
        states = saved["rng"]["torch"]  # one per rank (a single tensor in checkpoints of older versions)
        self.rng_state = states[self.accelerator.process_index] if isinstance(states, list) else states
        if self.on_gpu and saved["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        torch.set_rng_state(self.rng_state)
        return saved["result"], saved["position"], saved["running"]

    def resume_rng(self) -> None:
        """Set the saved RNG state again just before the first batch a mid-epoch resume trains: creating the epoch's
        data iterator draws a seed from the global generator, which the interrupted run had drawn before it saved."""
        if getattr(self, "rng_state", None) is not None:
            torch.set_rng_state(self.rng_state)
            self.rng_state = None


def read_resume(directory: Path) -> dict | None:
    """The raw resume checkpoint of a run directory (None if there is none): for inspection and tests."""
    path = Path(directory) / RESUME_FILE
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None
