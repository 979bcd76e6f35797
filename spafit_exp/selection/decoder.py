"""Decoder pre-tuning (subset paper, Appendix A Table 4): train the task head alone on the frozen encoder —
5 epochs, lr 4e-4, batch 64, clip 5, 10% warm-up, no weight decay — starting from the head initialisation of the
stage's seed (`decoder.stage_seed`: one for every repetition by default, as the paper shares its decoder), cached on
disk and reused by every variant and seed of a task. The same recipe gives the transfer study its decoder-only
score (`train_head`)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from spafit_exp.core.results import replace_atomically, write_json_atomic
from spafit_exp.core.spec import DecoderRecipe, RunSpec, plain
from spafit_exp.core.stored import read_cache
from spafit_exp.engine.loop import TrainResult, train
from spafit_exp.inputs.data import TaskData, cache_root, load_task_data, run_key, stage_seed
from spafit_exp.inputs.modeling import build_model, build_tokenizer
from spafit_exp.methods import Method, MethodOptions
from spafit_exp.ops.params import freeze_all, is_head, restored, unfreeze


def decoder_spec(spec: RunSpec, recipe: DecoderRecipe, **trainer) -> RunSpec:
    """The run's spec with the decoder recipe as its trainer (head only: no weight decay, no checkpoints);
    `trainer`: further trainer fields the stage sets (its seed)."""
    return replace(spec, method=MethodOptions(name="frozen", tag="frozen", lr=recipe.lr), trainer=replace(
        spec.trainer, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size,
        max_grad_norm=recipe.max_grad_norm, warmup_ratio=recipe.warmup_ratio, weight_decay=0.0, schedule="linear",
        checkpoint_every=0, grad_accum=1,
        eval_every=None, early_stopping_patience=None, **trainer))  # the stage keeps its last state: no cut


def train_head(spec: RunSpec, recipe: DecoderRecipe, model: torch.nn.Module, data: TaskData | None = None,
               **trainer) -> TrainResult:
    """Train only the head of `model` (in place) with the decoder recipe; the encoder stays frozen."""
    tuned = decoder_spec(spec, recipe, **trainer)
    data = data if data is not None else load_task_data(tuned, build_tokenizer(spec.model))
    freeze_all(model)
    unfreeze(model, is_head)
    return train(tuned, Method(model), data, Accelerator(gradient_accumulation_steps=1))


def pretuned_head(spec: RunSpec, model: torch.nn.Module, recipe: DecoderRecipe) -> tuple[dict[str, torch.Tensor], str]:
    """The pre-tuned head's tensors for this model/task and the stage's seed (trained once, then read from the
    cache; a damaged entry is dropped and trained again); the model is left as it was."""
    key = run_key(spec, "decoder", plain(recipe))
    path = cache_root(spec.data) / "decoders" / f"{spec.task.name}-{key}.safetensors"
    own = {n: p.shape for n, p in model.named_parameters() if is_head(n)}
    head = read_cache(path, _load_decoder, lambda h: {n: t.shape for n, t in h.items()} == own, "decoder cache")
    if head is not None:
        return head, str(path)
    seed = stage_seed(spec)
    # A label over the loop's own epoch bars: which phase of the run they belong to.
    with _stage_model(spec, model, seed) as start, tqdm(
            total=1, desc=f"decoder pre-tuning ({spec.task.name}, {recipe.epochs} epochs)", bar_format="{desc}",
            leave=False):
        set_seed(seed)  # its dropout: the same decoder whichever run computes it
        result = train_head(spec, recipe, start, seed=seed, eval_every_epoch=False)  # seed: its data order
        head = {n: p.detach().cpu().clone() for n, p in start.named_parameters() if is_head(n)}
    with replace_atomically(path) as tmp:
        save_file({k: v.contiguous() for k, v in head.items()}, str(tmp))
    # The decoder-only dev score: the frozen-encoder baseline every subset run of this task starts from.
    write_json_atomic(path.with_suffix(".json"), result.best.get("dev", {}))
    return head, str(path)


@contextmanager
def _stage_model(spec: RunSpec, model: torch.nn.Module, seed: int):
    """The model the decoder is tuned on: the run's own (restored afterwards) when the stage's seed is the run's,
    else the one that seed builds (as `checkpoint.seeded_model` would): the shared head initialisation, on the same
    pretrained encoder."""
    if seed == int(spec.trainer.seed):
        with restored(model):
            yield model
        return
    set_seed(seed)
    yield build_model(spec.model, spec.task)


def _load_decoder(path: Path) -> dict[str, torch.Tensor]:
    """The cached head; its scores file must read too (one cache entry: a damaged half is made again whole)."""
    head = load_file(str(path))
    if not isinstance(decoder_scores(str(path)), dict):
        raise ValueError(f"{Path(path).with_suffix('.json').name}: not a JSON object")
    return head


def decoder_scores(path: str) -> dict:
    """Dev metrics of a cached pre-tuned decoder ({} for a cache written before scores were kept)."""
    scores = Path(path).with_suffix(".json")
    return json.loads(scores.read_text()) if scores.is_file() else {}


def load_head(model: torch.nn.Module, head: dict[str, torch.Tensor]) -> None:
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in head.items():
            own[name].copy_(tensor)
