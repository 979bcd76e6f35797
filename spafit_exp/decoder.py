"""Decoder pre-tuning (subset paper, Appendix A Table 4): before any subset run, train the task head on the
frozen encoder — 5 epochs, lr 4e-4, batch 64, clip 5, 10% warm-up, no weight decay — starting from the head
initialisation of the run's seed (shared by every variant of one task/seed), cached on disk and reused."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from spafit_exp.params import is_head


def cache_root(cfg: DictConfig) -> Path:
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir).expanduser()
    return Path(os.environ.get("SPAFIT_CACHE", Path.home() / ".cache" / "spafit_exp"))


def run_key(cfg: DictConfig, *extra) -> str:
    """What a cached decoder or statistic depends on: model, task data slice, seed, max_len, and `extra`."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    blob = json.dumps([model, cfg.task.name, cfg.data.source, str(cfg.data.dir), cfg.trainer.seed,
                       cfg.trainer.max_train_samples, cfg.trainer.max_len, *extra], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _decoder_cfg(cfg: DictConfig) -> DictConfig:
    d = cfg.selector.decoder
    tuned = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    tuned.method = {"name": "frozen", "tag": "frozen"}
    tuned.trainer.update(epochs=d.epochs, lr=d.lr, batch_size=d.batch_size, max_grad_norm=d.max_grad_norm,
                         warmup_ratio=d.warmup_ratio, weight_decay=0.0, schedule="linear", checkpoint_every=0,
                         eval_every_epoch=False, grad_accum=1)
    return tuned


def pretuned_head(cfg: DictConfig, model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    """The pre-tuned head's tensors for this model/task/seed (trained once, then read from the cache)."""
    d = cfg.selector.decoder
    key = run_key(cfg, "decoder", OmegaConf.to_container(d, resolve=True))
    path = cache_root(cfg) / "decoders" / f"{cfg.task.name}-{key}.safetensors"
    if path.is_file():
        return load_file(str(path)), str(path)

    from accelerate import Accelerator

    from spafit_exp.data import load_task_data
    from spafit_exp.methods import Prepared
    from spafit_exp.modeling import build_tokenizer
    from spafit_exp.params import freeze_all, unfreeze
    from spafit_exp.results import replace_atomically, write_json_atomic
    from spafit_exp.train import train

    tuned_cfg = _decoder_cfg(cfg)
    data = load_task_data(tuned_cfg, build_tokenizer(cfg.model))
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    requires = {n: p.requires_grad for n, p in model.named_parameters()}
    freeze_all(model)
    unfreeze(model, is_head)
    result = train(tuned_cfg, Prepared(model), data, Accelerator(gradient_accumulation_steps=1))
    head = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if is_head(n)}
    with torch.no_grad():  # leave the model as we found it; the caller loads the head explicitly
        for n, p in model.named_parameters():
            p.copy_(initial[n])
            p.requires_grad_(requires[n])
    with replace_atomically(path) as tmp:
        save_file({k: v.contiguous() for k, v in head.items()}, str(tmp))
    # The decoder-only dev score: the frozen-encoder baseline every subset run of this task/seed starts from.
    write_json_atomic(path.with_suffix(".json"), result.best.get("dev", {}))
    return head, str(path)


def decoder_scores(path: str) -> dict:
    """Dev metrics of a cached pre-tuned decoder ({} for a cache written before scores were kept)."""
    scores = Path(path).with_suffix(".json")
    return json.loads(scores.read_text()) if scores.is_file() else {}


def load_head(model: torch.nn.Module, head: dict[str, torch.Tensor]) -> None:
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in head.items():
            own[name].copy_(tensor)
