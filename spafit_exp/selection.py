"""The selection stage of a fixed-subset run (subset paper): before the method is applied, pre-tune the decoder
(cached), size the subset, and ask the selector (`selector=...`, spafit_exp/selectors/) for its k elements. The
subset method then only consumes the resulting `Selection`.

On the meta device (dry runs) only the size is computed: no weights, no data."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from spafit_exp.decoder import decoder_scores, load_head, pretuned_head
from spafit_exp.masking import FlatParams, bitfit_size, candidate_params, subnetwork_size
from spafit_exp.methods import Selection
from spafit_exp.selectors import SELECTORS, Context, selector_options


def run_selection(cfg: DictConfig, model: nn.Module) -> Selection:
    spec = SELECTORS.get(cfg.selector.name)
    options = selector_options(cfg.selector)
    flat = FlatParams(candidate_params(model, cfg.method.candidates))
    k = subnetwork_size(options.k, options.fraction, flat.n, bitfit_size(model), "selector")
    info = {"selector": spec.name, "k": k, "n": flat.n}
    if next(model.parameters()).device.type == "meta":
        return Selection(index=None, k=k, n=flat.n, info=info)
    head, decoder_key = {}, "none"
    if options.pretune_decoder:
        head, decoder_key = pretuned_head(cfg, model, options.decoder)
        load_head(model, head)  # gradient statistics are taken with the pre-tuned head in place
        info.update(decoder=decoder_key, decoder_dev=decoder_scores(decoder_key))
    picked = spec.select(Context(cfg, options, model, flat, k, decoder_key))
    info.update(picked.info)
    info["fraction"] = info["k"] / flat.n
    index = picked.index.long().cpu()
    return Selection(index=index, k=int(info["k"]), n=flat.n, head=picked.head or head, delta=picked.delta,
                     evaluate_only=picked.evaluate_only, info=info)
