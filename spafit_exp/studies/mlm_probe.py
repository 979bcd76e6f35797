"""MLM probe: how much masked-language-modelling knowledge a fine-tuned encoder still exposes. The encoder is
frozen (bit-identical afterwards); a two-layer MLP head (dense -> GELU -> LayerNorm -> vocabulary) is trained on
WikiText paragraphs and scored by precision@1 on the masked tokens of held-out paragraphs (fixed masking)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf
from torch import nn

from spafit_exp.core import results
from spafit_exp.engine.artefacts import load_run
from spafit_exp.inputs.data import mlm_batches, wikitext_paragraphs
from spafit_exp.inputs.modeling import build_model, build_tokenizer
from spafit_exp.ops import unpad
from spafit_exp.studies import merged_encoder_state, register, source_runs


class ProbeHead(nn.Module):
    def __init__(self, hidden: int, vocab: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, vocab))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)


def encoder_from(cfg: DictConfig, source: Path | None):
    """(encoder, model cfg, source record or None): a run's fine-tuned encoder (LoRA merged), or the pretrained."""
    if source is None:
        set_seed(cfg.trainer.seed)
        return build_model(cfg.model, cfg.task).base_model, cfg.model, None
    prepared, record = load_run(source)
    run_cfg = OmegaConf.create(record["config"])
    plain = build_model(run_cfg.model, run_cfg.task)
    missing, unexpected = plain.base_model.load_state_dict(merged_encoder_state(prepared.model), strict=False)
    if unexpected or [k for k in missing if "pooler" not in k]:
        raise RuntimeError(f"{source}: encoder weights do not fit the plain model: {unexpected[:3]} {missing[:3]}")
    return plain.base_model, run_cfg.model, record


def probe(cfg: DictConfig, encoder: nn.Module, tokenizer) -> dict:
    s = cfg.study
    lines = wikitext_paragraphs()
    train_lines, test_lines = lines[: s.train_lines], lines[s.train_lines: s.train_lines + s.test_lines]
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    torch.manual_seed(cfg.trainer.seed)
    head = ProbeHead(encoder.config.hidden_size, len(tokenizer))
    optimizer = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    test = mlm_batches(test_lines, tokenizer, cfg.trainer.max_len, s.batch_size, seed=12345,
                       mask_probability=s.mask_probability)
    last_loss = float("nan")
    for epoch in range(s.epochs):
        for batch in mlm_batches(train_lines, tokenizer, cfg.trainer.max_len, s.batch_size, cfg.trainer.seed + epoch,
                                 mask_probability=s.mask_probability):
            with torch.no_grad():
                states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            masked = batch["labels"] != -100  # the head is per position: score only the masked ones (~15%)
            if not masked.any():  # a batch of very short lines can draw no mask: nothing to learn from
                continue
            loss = loss_fn(head(states[masked]), batch["labels"][masked])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            last_loss = float(loss)
    hits = total = 0
    with torch.no_grad():
        for batch in test:
            states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            masked = batch["labels"] != -100
            hits += int((head(states[masked]).argmax(-1) == batch["labels"][masked]).sum())
            total += int(masked.sum())
    return {"p_at_1": hits / max(total, 1), "masked_tokens": total, "final_loss": last_loss,
            "head_params": sum(p.numel() for p in head.parameters())}


@register("mlm_probe")
def probe_runs(cfg: DictConfig) -> list[dict]:
    records = []
    for source in source_runs(cfg):
        started = time.time()
        encoder, model_cfg, src = encoder_from(cfg, source)
        with unpad.applied(encoder, cfg.trainer.unpad):  # frozen encoder passes skip the padding
            outcome = probe(cfg, encoder, build_tokenizer(model_cfg))
        src = src or {"task": "none", "method_tag": "pretrained", "lr": 0.0, "seed": cfg.trainer.seed}
        record = results.base_record(cfg)
        record.update(status="completed", experiment="mlm_probe", task=src["task"], method_tag=src["method_tag"],
                      method=src.get("method", "pretrained"), model=model_cfg.name, lr=src["lr"], seed=src["seed"],
                      main_metric="p_at_1", source_run=str(source) if source else None,
                      params={"trainable": outcome["head_params"]},
                      metrics={"best": {"epoch": cfg.study.epochs, "dev": {"p_at_1": outcome["p_at_1"]}}},
                      probe=outcome, timing={"wall_s": time.time() - started})
        # the probed encoder's model and task, not the study's own `task=`: tables label the columns by them
        record["config"].update(model=OmegaConf.to_container(model_cfg, resolve=True),
                                task=(src.get("config") or {}).get("task") or {"name": "none", "display": "none"})
        directory = results.layout_dir(cfg.run.root, "mlm_probe", record["task"], record["method_tag"],
                                       model_cfg.name, record["lr"], record["seed"])
        results.write(directory, record)
        print(f"mlm probe: {source or 'pretrained'} P@1={outcome['p_at_1']:.4f} ({outcome['masked_tokens']} tokens)")
        records.append(record)
    return records
