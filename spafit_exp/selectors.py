"""Fixed parameter subsets (subset paper, section 3.1): each selector returns the flat indices (over the
candidate tensors, see masking.FlatParams) of the k elements a subset run may train.

random · bitfit (all biases; its size is every other selector's default k) · downstream_sqgrad (largest sum of
squared task-loss gradients over the training set: empirical Fisher) · pretrain_sqgrad (same for the MLM loss on
WikiText) · combined (largest F_down / (1 + F_pretr), eq. 3) · diff_pruning (L1-regularised full fine-tuning,
then the k largest |theta - theta0|).

Gradient statistics are computed once, cached on disk (keyed by model, task, seed, decoder and sample count)
and reused across the learning-rate grid and repetitions."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from spafit_exp import DATA_DIR
from spafit_exp.config import ConfigError
from spafit_exp.decoder import cache_root, run_key
from spafit_exp.masking import FlatParams
from spafit_exp.params import is_bitfit_param
from spafit_exp.results import replace_atomically
from spafit_exp.sampling import topk_indices, uniform_indices

NORMALISATIONS = ("none", "mean")


# ---------------------------------------------------------------- gradient statistics


def sq_grad_sum(model: torch.nn.Module, flat: FlatParams, batches) -> torch.Tensor:
    """Sum over batches of the squared gradient of the loss, per candidate element (eval mode: no dropout).
    With batches of one example this is the empirical Fisher diagonal of the paper."""
    by_name = dict(model.named_parameters())
    params = [by_name.get(n) for n in flat.names]
    requires = {n: p.requires_grad for n, p in by_name.items()}
    for p in params:
        if p is not None:
            p.requires_grad_(True)
    total = torch.zeros(flat.n, dtype=torch.float32, device=flat.params[0].device)
    views = flat.views(total)
    was_training = model.training
    model.eval()
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        with torch.no_grad():
            for view, p in zip(views, params):
                if p is not None and p.grad is not None:
                    view.addcmul_(p.grad, p.grad)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    for n, p in by_name.items():
        p.requires_grad_(requires[n])
    return total


def _cached(cfg: DictConfig, kind: str, extra, compute) -> torch.Tensor:
    key = run_key(cfg, kind, extra)
    path = cache_root(cfg) / "stats" / f"{cfg.task.name}-{kind}-{key}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu")
    value = compute()
    with replace_atomically(path) as tmp:
        torch.save(value.cpu(), tmp)
    return value


def downstream_stats(cfg: DictConfig, model, flat: FlatParams, decoder_key: str) -> torch.Tensor:
    from spafit_exp.data import load_task_data
    from spafit_exp.modeling import build_tokenizer

    s = cfg.selector

    def compute():
        data = load_task_data(cfg, build_tokenizer(cfg.model))
        rows = data.train[: s.stat_samples] if s.stat_samples else data.train
        return sq_grad_sum(model, flat, DataLoader(rows, batch_size=s.stat_batch_size, collate_fn=data.collate))

    return _cached(cfg, "downstream", [decoder_key, s.stat_samples, s.stat_batch_size, flat.names], compute)


def wikitext_batches(cfg: DictConfig, tokenizer, samples: int, batch_size: int, seed: int):
    """MLM batches from the vendored WikiText-2 raw text: one sample per paragraph line (headings skipped),
    truncated to max_len, 15% of tokens masked (80% [MASK] / 10% random / 10% kept)."""
    from transformers import DataCollatorForLanguageModeling

    path = Path(cfg.selector.wikitext) if cfg.selector.wikitext else DATA_DIR / "wikitext2" / "wiki.test.raw"
    if not path.is_file():
        raise ConfigError(f"selector.wikitext={path}: file not found")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line and not line.startswith("=")][:samples]
    encoded = tokenizer(lines, truncation=True, max_length=cfg.trainer.max_len)["input_ids"]
    torch.manual_seed(seed)  # the collator's masking draws from the global generator
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, return_tensors="pt")
    batches = [collator([{"input_ids": ids} for ids in encoded[i:i + batch_size]])
               for i in range(0, len(encoded), batch_size)]
    return batches, len(encoded)


def mlm_model_like(cfg: DictConfig, model: torch.nn.Module):
    """An MLM model whose encoder is `model`'s encoder at theta0; its LM head comes from the checkpoint when it
    has one, else is freshly initialised (seeded) — the embedded MiniLM ships without one."""
    from transformers import AutoModelForMaskedLM

    from spafit_exp.modeling import weights_source

    torch.manual_seed(cfg.trainer.seed)
    head = "random"
    if cfg.model.init == "pretrained":
        mlm, info = AutoModelForMaskedLM.from_pretrained(weights_source(cfg.model), output_loading_info=True)
        head = "random" if any("cls." in k or "lm_head" in k for k in info.get("missing_keys", [])) else "pretrained"
    else:
        mlm = AutoModelForMaskedLM.from_config(model.config)
    mlm.base_model.load_state_dict(model.base_model.state_dict(), strict=False)
    return mlm.to(next(model.parameters()).device), head


def pretrain_stats(cfg: DictConfig, model, flat: FlatParams) -> torch.Tensor:
    from spafit_exp.modeling import build_tokenizer

    s = cfg.selector

    def compute():
        mlm, head = mlm_model_like(cfg, model)
        batches, count = wikitext_batches(cfg, build_tokenizer(cfg.model), s.pretrain_samples, s.stat_batch_size,
                                          cfg.trainer.seed)
        return sq_grad_sum(mlm, flat, batches)

    return _cached(cfg, "pretrain", [s.pretrain_samples, s.stat_batch_size, str(s.wikitext), flat.names], compute)


def combine(f_down: torch.Tensor, f_pretr: torch.Tensor, normalise: str) -> torch.Tensor:
    """Eq. 3: F_down / (1 + F_pretr). The two statistics differ by orders of magnitude (different losses, sample
    counts, heads), which decides whether the `1 +` matters at all; `mean` rescales each to mean 1 first so the
    ratio trades them off on equal terms; `none` is eq. 3 literally."""
    if normalise == "mean":
        f_down = f_down / f_down.mean().clamp_min(1e-30)
        f_pretr = f_pretr / f_pretr.mean().clamp_min(1e-30)
    return f_down / (1 + f_pretr)


# ---------------------------------------------------------------- selection


def bitfit_indices(flat: FlatParams) -> torch.Tensor:
    parts = [torch.arange(a, b) for name, a, b in zip(flat.names, flat.offsets[:-1], flat.offsets[1:])
             if is_bitfit_param(name)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def validate_selector(cfg: DictConfig) -> None:
    s = cfg.selector
    if s.name == "none":
        return
    if s.get("k") is not None and not (isinstance(s.k, int) and s.k >= 1):
        raise ConfigError(f"selector.k={s.k}: must be an integer >= 1")
    if s.get("fraction") is not None and not 0 < s.fraction <= 1:
        raise ConfigError(f"selector.fraction={s.fraction}: must be in (0, 1]")
    if s.get("normalise", "mean") not in NORMALISATIONS:
        raise ConfigError(f"selector.normalise={s.normalise}: must be one of {', '.join(NORMALISATIONS)}")


def target_size(cfg: DictConfig, flat: FlatParams) -> int:
    s = cfg.selector
    if s.get("k") is not None:
        k = int(s.k)
    elif s.get("fraction") is not None:
        k = int(round(float(s.fraction) * flat.n))
    else:
        k = int(bitfit_indices(flat).numel())
    if not 1 <= k <= flat.n:
        raise ConfigError(f"selector.k={k}: must be in [1, {flat.n}] (the number of candidate elements)")
    return k


def select(cfg: DictConfig, model: torch.nn.Module, flat: FlatParams, decoder_key: str) -> tuple[torch.Tensor, dict]:
    """Flat indices of the subset, and facts for the results record."""
    s = cfg.selector
    k = target_size(cfg, flat)
    info = {"selector": s.name, "k": k, "n": flat.n}
    if s.name == "random":
        g = torch.Generator().manual_seed(int(cfg.trainer.seed))
        index = uniform_indices(flat.n, k, g)
    elif s.name == "bitfit":
        index = bitfit_indices(flat)
        info["k"] = int(index.numel())
    elif s.name == "downstream_sqgrad":
        index = topk_indices(downstream_stats(cfg, model, flat, decoder_key), k)
    elif s.name == "pretrain_sqgrad":
        index = topk_indices(pretrain_stats(cfg, model, flat), k)
    elif s.name == "combined":
        scores = combine(downstream_stats(cfg, model, flat, decoder_key), pretrain_stats(cfg, model, flat),
                         s.get("normalise", "mean"))
        index = topk_indices(scores, k)
        info["normalise"] = s.get("normalise", "mean")
    elif s.name == "diff_pruning":
        index = diff_pruning_indices(cfg, model, flat, k)
        info.update(l1=float(s.l1), retrain=bool(s.retrain))
    else:
        raise ConfigError(f"selector.name={s.name}: unknown selector")
    info["fraction"] = info["k"] / flat.n
    return index.to(torch.long).cpu(), info


def diff_pruning_indices(cfg: DictConfig, model: torch.nn.Module, flat: FlatParams, k: int) -> torch.Tensor:
    """Fine-tune fully with an L1 penalty on theta - theta0 (our loop, method full_ft_l1, the run's recipe), keep
    the k largest |theta - theta0|. Cached: the fine-tuned deltas of the candidates and the head."""
    s = cfg.selector
    # The L1 fine-tune has its own rate (selector.prune_lr): one mask per (model, task, seed, recipe), shared by
    # every retraining LR of a grid, as the paper prunes once.
    recipe = OmegaConf.to_container(cfg.trainer, resolve=True) | {"lr": float(s.prune_lr)}
    key = run_key(cfg, "diff_pruning", float(s.l1), recipe, flat.names)
    path = cache_root(cfg) / "stats" / f"{cfg.task.name}-diffprune-{key}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu")
    else:
        from accelerate import Accelerator

        from spafit_exp.data import load_task_data
        from spafit_exp.methods.regularized import full_ft_l1
        from spafit_exp.modeling import build_tokenizer
        from spafit_exp.train import train

        theta0 = [p.detach().clone() for p in flat.params]
        head0 = {n: p.detach().clone() for n, p in model.named_parameters() if "classifier" in n}
        tuned = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        tuned.trainer.update(checkpoint_every=0, lr=float(s.prune_lr))
        prepared = full_ft_l1(model, OmegaConf.create({"name": "full_ft_l1", "coefficient": float(s.l1)}))
        train(tuned, prepared, load_task_data(tuned, build_tokenizer(cfg.model)), Accelerator())
        delta = torch.cat([(p.detach() - p0).reshape(-1).cpu() for p, p0 in zip(flat.params, theta0)])
        head = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if "classifier" in n}
        with torch.no_grad():  # back to theta0: the caller decides what to keep
            for p, p0 in zip(flat.params, theta0):
                p.copy_(p0)
            for n, p in model.named_parameters():
                if n in head0:
                    p.copy_(head0[n])
        saved = {"delta": delta, "head": head}
        with replace_atomically(path) as tmp:
            torch.save(saved, tmp)
    index = topk_indices(saved["delta"].abs(), k)
    if not s.retrain:  # the pruned model itself: theta0 + the k kept differences, and the tuned head
        with torch.no_grad():
            flat_delta = torch.zeros_like(saved["delta"])
            flat_delta[index] = saved["delta"][index]
            for p, d in zip(flat.params, flat.views(flat_delta)):
                p.add_(d.to(p.device))
            own = dict(model.named_parameters())
            for n, t in saved["head"].items():
                own[n].copy_(t)
    return index
