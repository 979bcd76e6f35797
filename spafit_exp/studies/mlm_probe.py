"""MLM probe: how much masked-language-modelling knowledge a fine-tuned encoder still exposes. The encoder is
frozen (bit-identical afterwards); a two-layer MLP head (dense -> GELU -> LayerNorm -> vocabulary) is trained on
WikiText paragraphs and scored by precision@1 on the masked tokens of held-out paragraphs (fixed masking)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch import nn

from spafit_exp.core import results
from spafit_exp.core.run_dir import RunDir
from spafit_exp.core.spec import ModelSpec, RunSpec, plain, stored_specs
from spafit_exp.engine.artefacts import load_run
from spafit_exp.engine.loop import unpadded
from spafit_exp.inputs.data import mlm_batches, wikitext_paragraphs
from spafit_exp.inputs.modeling import build_model, build_tokenizer
from spafit_exp.studies import merged_encoder_state, register, source_runs


class ProbeHead(nn.Module):
    def __init__(self, hidden: int, vocab: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, vocab))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)


def encoder_from(spec: RunSpec, source: Path | None) -> tuple[nn.Module, ModelSpec, dict | None]:
    """(encoder, its model spec, source record or None): a run's fine-tuned encoder (LoRA merged), or the
    pretrained."""
    if source is None:
        set_seed(spec.trainer.seed)
        return build_model(spec.model, spec.task).base_model, spec.model, None
    method, record = load_run(source)
    model, task = stored_specs(record["config"])
    fresh = build_model(model, task)
    missing, unexpected = fresh.base_model.load_state_dict(merged_encoder_state(method.model), strict=False)
    if unexpected or [k for k in missing if "pooler" not in k]:
        raise RuntimeError(f"{source}: encoder weights do not fit the plain model: {unexpected[:3]} {missing[:3]}")
    return fresh.base_model, model, record


def probe(spec: RunSpec, encoder: nn.Module, tokenizer) -> dict:
    s, trainer = spec.study, spec.trainer
    lines = wikitext_paragraphs()
    train_lines, test_lines = lines[: s["train_lines"]], lines[s["train_lines"]: s["train_lines"] + s["test_lines"]]
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    torch.manual_seed(trainer.seed)
    head = ProbeHead(encoder.config.hidden_size, len(tokenizer))
    optimizer = torch.optim.AdamW(head.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    test = mlm_batches(test_lines, tokenizer, trainer.max_len, s["batch_size"], seed=12345,
                       mask_probability=s["mask_probability"])
    last_loss = float("nan")
    for epoch in range(s["epochs"]):
        for batch in mlm_batches(train_lines, tokenizer, trainer.max_len, s["batch_size"], trainer.seed + epoch,
                                 mask_probability=s["mask_probability"]):
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
def probe_runs(spec: RunSpec) -> list[dict]:
    records = []
    for source in source_runs(spec.study):
        started = time.time()
        encoder, model, src = encoder_from(spec, source)
        with unpadded(encoder, spec.trainer.unpad):  # frozen encoder passes skip the padding
            outcome = probe(spec, encoder, build_tokenizer(model))
        model_config = src["config"]["model"] if src else spec.config["model"]  # as the record keeps it
        src = src or {"task": "none", "method_tag": "pretrained", "lr": 0.0, "seed": spec.trainer.seed}
        record = results.base_record(spec)
        record.update(status="completed", experiment="mlm_probe", task=src["task"], method_tag=src["method_tag"],
                      method=src.get("method", "pretrained"), model=model.name, lr=src["lr"], seed=src["seed"],
                      main_metric="p_at_1", source_run=str(source) if source else None,
                      params={"trainable": outcome["head_params"]},
                      metrics={"best": {"epoch": spec.study["epochs"], "dev": {"p_at_1": outcome["p_at_1"]}}},
                      probe=outcome, timing={"wall_s": time.time() - started})
        # the probed encoder's model and task, not the study's own `task=`: tables label the columns by them
        record.config.update(model=plain(model_config),
                             task=(src.get("config") or {}).get("task") or {"name": "none", "display": "none"})
        # the one writer: the directory's lock, its fingerprint check (another recipe's record: run.force=true)
        RunDir.of(spec.run.root, "mlm_probe", record.task, record.method_tag, model.name, record.lr,
                  record.seed).write(record, force=bool(spec.run.force))
        print(f"mlm probe: {source or 'pretrained'} P@1={outcome['p_at_1']:.4f} ({outcome['masked_tokens']} tokens)")
        records.append(record.to_json())
    return records
