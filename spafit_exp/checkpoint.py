"""Compact fine-tuned state: only the trainable tensors (LoRA factors, trained biases, head), never the frozen base.

`load_run(run_dir)` rebuilds the base model from the run's own config, applies the same method and loads the
saved tensors: the result is the run's best-epoch model."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from spafit_exp import results
from spafit_exp.methods import Prepared, apply_method
from spafit_exp.modeling import build_model

TRAINABLE_FILE = "trainable.safetensors"


def build_prepared(cfg) -> Prepared:
    """Seeded model build + method: the frozen part of a random-init model (`model.init=random`) and the
    initial head are a function of the seed, so a run and its reload see the same base."""
    from accelerate.utils import set_seed

    set_seed(cfg.trainer.seed)
    return apply_method(build_model(cfg.model, cfg.task), cfg.method, cfg)


def save_trainable(state: dict, directory: Path) -> str:
    """Atomic (temp + rename), like results.json, so a crash never leaves half a file."""
    with results.replace_atomically(Path(directory) / TRAINABLE_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    return TRAINABLE_FILE


def load_trainable(prepared: Prepared, path: Path) -> None:
    """Load saved tensors onto a model prepared with the same method; every saved tensor must find its slot."""
    state = load_file(str(path))
    own = dict(prepared.model.named_parameters())
    missing = sorted({n.removesuffix(".__idx").removesuffix(".__val") for n in state} - set(own))
    if missing:
        raise KeyError(f"{path}: tensors not in the model: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name, tensor in state.items():
        if name.endswith(".__idx"):  # sparse entry: scatter the values into the base tensor
            base = name[: -len(".__idx")]
            own[base].data.view(-1)[tensor] = state[f"{base}.__val"].to(own[base].dtype)
        elif not name.endswith(".__val"):
            own[name].data.copy_(tensor)


def load_run(run_dir: Path) -> tuple[Prepared, dict]:
    record = results.read(run_dir)
    if record is None:
        raise FileNotFoundError(f"{run_dir}: no {results.RESULTS}")
    prepared = build_prepared(OmegaConf.create(record["config"]))
    load_trainable(prepared, Path(run_dir) / TRAINABLE_FILE)
    return prepared, record


# ---------------------------------------------------------------- resume checkpoints

RESUME_FILE = "resume.pt"


def save_resume(directory: Path, state: dict) -> None:
    """Everything needed to continue bit-exactly: trainable tensors, optimizer, scheduler, RNG, data position."""
    import torch

    with results.replace_atomically(Path(directory) / RESUME_FILE) as tmp:
        torch.save(state, tmp)


def load_resume(directory: Path) -> dict | None:
    import torch

    path = Path(directory) / RESUME_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def drop_resume(directory: Path) -> None:
    (Path(directory) / RESUME_FILE).unlink(missing_ok=True)
