"""Compact fine-tuned state: only the trainable tensors (LoRA factors, trained biases, sparse subset values,
head), never the frozen base.

`load_run(run_dir)` rebuilds the base model from the run's own config, applies the same method and loads the
saved tensors: the result is the run's best-epoch model. A fixed-subset run reloads from its sparse artefact
alone (indices + values + head): nothing is selected or recomputed."""

from __future__ import annotations

from pathlib import Path

from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file

from spafit_exp.core import results
from spafit_exp.core.spec import ModelSpec, TaskSpec, stored_specs
from spafit_exp.inputs.modeling import build_model
from spafit_exp.methods import Method, Selection, apply_method, get_method, method_options

TRAINABLE_FILE = "trainable.safetensors"


def seeded_model(model: ModelSpec, task: TaskSpec, seed: int, device: str = "cpu"):
    """The frozen part of a random-init model (`model.init=random`) and the initial head are a function of the
    seed (`trainer.seed`), so a run and its reload see the same base."""
    set_seed(seed)
    return build_model(model, task, device=device)



def save_trainable(state: dict, directory: Path) -> str:
    """Atomic (temp + rename), like results.json, so a crash never leaves half a file."""
    with results.replace_atomically(Path(directory) / TRAINABLE_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    return TRAINABLE_FILE


def load_trainable(method: Method, state: dict, source: Path) -> None:
    """Load saved tensors onto a model prepared with the same method; every saved tensor must find its slot."""
    own = dict(method.model.named_parameters())
    missing = sorted({n.removesuffix(".__idx").removesuffix(".__val") for n in state} - set(own))
    if missing:
        raise KeyError(f"{source}: tensors not in the model: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    method.import_state(method.model, state)


def load_run(run_dir: Path) -> tuple[Method, dict]:
    """(the applied Method, whose `.model` is the best-epoch model with the method's own modules, e.g. unmerged
    LoRA layers; the record). No tokenizer: `modeling.build_tokenizer` of the record's config gives the run's. The
    record's status is not checked; `spafit_exp.export` and `spafit_exp.predict` take completed runs only."""
    record = results.read(run_dir)
    if record is None:
        raise FileNotFoundError(f"{run_dir}: no {results.RESULTS}")
    config = record["config"]
    # records written before methods carried their recommended rate
    options = method_options({"lr": config["trainer"]["lr"], **config["method"]})
    path = Path(run_dir) / TRAINABLE_FILE
    state = load_file(str(path))
    model = seeded_model(*stored_specs(config), config["trainer"]["seed"])
    selection = None
    if get_method(options.name).needs_selection:
        selection = Selection.from_sparse_state(model, options.candidates, state)
    method = apply_method(model, options, selection)
    load_trainable(method, state, path)
    return method, record
