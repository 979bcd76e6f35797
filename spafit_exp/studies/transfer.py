"""Secondary-task transfer: an encoder tuned on a primary task (any method; LoRA merged) gets a fresh head for the
secondary task (`task=`). First the head alone is tuned (decoder recipe: the decoder-only score), then the whole
model is fine-tuned from there with the run's trainer recipe (the full score)."""

from __future__ import annotations

import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf

from spafit_exp import results
from spafit_exp.checkpoint import load_run
from spafit_exp.data import load_task_data
from spafit_exp.decoder import train_head
from spafit_exp.methods import Prepared
from spafit_exp.modeling import build_model, build_tokenizer
from spafit_exp.studies import merged_encoder_state, register, source_runs
from spafit_exp.train import train


def transfer_one(cfg: DictConfig, source: Path | None) -> dict:
    started = time.time()
    src, encoder_state, model_cfg = None, None, cfg.model
    if source is not None:
        prepared, src = load_run(source)
        encoder_state = merged_encoder_state(prepared.model)
        model_cfg = OmegaConf.create(src["config"]).model
    run_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    run_cfg.model = model_cfg
    set_seed(cfg.trainer.seed)
    model = build_model(model_cfg, cfg.task)  # fresh head for the secondary task, seeded
    if encoder_state is not None:
        model.base_model.load_state_dict(encoder_state, strict=False)
    data = load_task_data(run_cfg, build_tokenizer(model_cfg))

    decoder = train_head(run_cfg, cfg.study.decoder, model, data)
    for p in model.parameters():
        p.requires_grad_(True)
    run_cfg.trainer.checkpoint_every = 0
    full = train(run_cfg, Prepared(model), data, Accelerator())

    src = src or {"task": "none", "method_tag": "pretrained"}
    record = results.base_record(cfg)
    record.update(status="completed", experiment="transfer", method_tag=f"{src['task']}:{src['method_tag']}",
                  method=src.get("method", "pretrained"), model=model_cfg.name, source_run=str(source) if source else None,
                  metrics={"best": {"epoch": full.best["epoch"], "dev": full.best["dev"]},
                           "decoder": decoder.best, "epochs": full.epochs},
                  timing={"wall_s": time.time() - started})
    directory = results.layout_dir(cfg.run.root, "transfer", cfg.task.name, record["method_tag"], model_cfg.name,
                                   cfg.trainer.lr, cfg.trainer.seed)
    results.write(directory, record)
    main = cfg.task.main_metric
    print(f"transfer {record['method_tag']} -> {cfg.task.name}: decoder-only {decoder.best['dev'][main]:.4f}, "
          f"full {full.best['dev'][main]:.4f}")
    return record


@register("transfer")
def transfer_runs(cfg: DictConfig) -> list[dict]:
    return [transfer_one(cfg, source) for source in source_runs(cfg)]
