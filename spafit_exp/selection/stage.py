"""The stages before a method is applied (subset paper): pre-tune the decoder (`decoder.pretune`, cached), then,
for a fixed-subset run, size the subset and ask the selector (`selector=...`, spafit_exp/selection/selectors/) for its k
elements. The subset method then only consumes the resulting `Selection`.

On the meta device (dry runs) only the size is computed: no weights, no data."""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from spafit_exp.core.spec import RunSpec
from spafit_exp.methods import Selection
from spafit_exp.methods.subnetwork import subset_size
from spafit_exp.ops.masking import FlatParams, bitfit_size, candidate_params
from spafit_exp.selection.decoder import decoder_scores, load_head, pretuned_head
from spafit_exp.selection.selectors import SELECTORS, Context


def pretune_decoder(spec: RunSpec, model: nn.Module, fixed_subset: bool) -> dict:
    """Load the pre-tuned head into `model` when `decoder.pretune` asks for it (null: fixed-subset runs only, whose
    selection statistics need a tuned head; true: every method, as the subset paper tunes the decoder first for
    every variant it compares). Returns the facts for the record ({} when nothing was pre-tuned)."""
    wanted = fixed_subset if spec.decoder.pretune is None else bool(spec.decoder.pretune)
    if not wanted or next(model.parameters()).device.type == "meta":
        return {}
    head, key = pretuned_head(spec, model, spec.decoder.recipe)  # decoder.* keys that make the head
    load_head(model, head)
    return {"decoder": key, "decoder_dev": decoder_scores(key)}


def run_selection(spec: RunSpec, model: nn.Module, decoder_key: str = "none") -> Selection:
    """The selector's k elements; `model` already holds the pre-tuned head when there is one (`decoder_key`).
    Which tensors are candidates is the subset method's option (`method.candidates`)."""
    selector, options = SELECTORS.get(spec.selector.name), spec.selector
    flat = FlatParams(candidate_params(model, spec.method.candidates))
    k = subset_size(options.k, options.fraction, flat.n, bitfit_size(model), "selector")
    info = {"selector": selector.name, "k": k, "n": flat.n}
    if next(model.parameters()).device.type == "meta":
        return Selection(index=None, k=k, n=flat.n, info=info)
    picked = selector.select(Context(spec, options, model, flat, k, decoder_key))
    info.update(picked.info)
    info["fraction"] = picked.k / flat.n
    return replace(picked, index=picked.index.long().cpu(), info=info)


@contextmanager
def preserved_rng():
    """Every global generator (python, numpy, torch CPU and CUDA) as it was before the block."""
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
