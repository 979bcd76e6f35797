"""Fixed-subset tuning (subset paper): the selector (`selector=...`) picks k elements of the encoder once; only
they train (plus the head), through the same masked update as the per-step methods, with optimizer state kept
for the k elements only. The saved artefact is sparse: indices and values of the trained elements, and the head.

With `selector.pretune_decoder=true` (default) the head first gets the paper's decoder pre-tuning (cached)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from spafit_exp import selectors
from spafit_exp.decoder import decoder_scores, load_head, pretuned_head
from spafit_exp.masking import FlatParams, candidate_params, masked_adamw
from spafit_exp.methods import Prepared, register
from spafit_exp.params import freeze_all, is_head, unfreeze


def sparse_state(model: torch.nn.Module, flat: FlatParams, local: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Indices + values of the trainable elements (`<name>.__idx`, `<name>.__val`), dense head tensors."""
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if is_head(n)}
    for name, p, idx in zip(flat.names, flat.params, local):
        if idx.numel():
            state[f"{name}.__idx"] = idx.cpu().clone()
            state[f"{name}.__val"] = p.detach().reshape(-1)[idx.to(p.device)].cpu().clone()
    return state


def validate_subset(cfg: DictConfig, num_layers: int) -> None:
    return None  # the selector's options are checked by config.validate (selectors.validate_selector)


@register("subset", validate=validate_subset, needs_run=True)
def subset(model, cfg, run_cfg) -> Prepared:
    if run_cfg.selector.name == "none":
        from spafit_exp.config import ConfigError

        raise ConfigError("method=subset needs a selector: selector=random|bitfit|downstream_sqgrad|pretrain_sqgrad|"
                          "combined|diff_pruning")
    info = {}
    decoder_key = "none"
    flat = FlatParams(candidate_params(model, cfg))
    head_size = sum(p.numel() for n, p in model.named_parameters() if is_head(n))
    freeze_all(model)
    unfreeze(model, is_head)
    if next(model.parameters()).device.type == "meta":  # dry run: no weights to select from, only the size
        k = selectors.target_size(run_cfg, flat)
        return Prepared(model, info={"selector": run_cfg.selector.name, "k": k, "n": flat.n, "trainable": k + head_size})
    if run_cfg.selector.pretune_decoder:
        head, decoder_key = pretuned_head(run_cfg, model)
        load_head(model, head)
        info["decoder"] = decoder_key
        info["decoder_dev"] = decoder_scores(decoder_key)
    index, selected = selectors.select(run_cfg, model, flat, decoder_key)
    info.update(selected, trainable=selected["k"] + head_size)
    local = flat.split(index)
    fixed = {}
    for p, idx in zip(flat.params, local):
        if idx.numel():
            p.requires_grad_(True)
            fixed[p] = idx.to(p.device)
    evaluate_only = run_cfg.selector.name == "diff_pruning" and not run_cfg.selector.retrain
    return Prepared(model, info=info, evaluate_only=evaluate_only,
                    make_optimizer=lambda m, t: masked_adamw(m, t, fixed=fixed),
                    export_state=lambda m: sparse_state(m, flat, local))
