"""Secondary-task transfer: an encoder tuned on a primary task (any method; LoRA merged) gets a fresh head for the
secondary task (`task=`). First the head alone is tuned (decoder recipe: the decoder-only score), then the whole
model is fine-tuned from there with the run's trainer recipe (the full score)."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spafit_exp import results
from spafit_exp.studies import merged_encoder_state, source_runs


def transfer_one(cfg: DictConfig, source: Path | None) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from spafit_exp.checkpoint import load_run
    from spafit_exp.data import load_task_data
    from spafit_exp.methods import Prepared
    from spafit_exp.modeling import build_model, build_tokenizer
    from spafit_exp.params import freeze_all, is_head, unfreeze
    from spafit_exp.train import train

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

    d = cfg.study.decoder
    decoder_cfg = OmegaConf.create(OmegaConf.to_container(run_cfg, resolve=True))
    decoder_cfg.trainer.update(epochs=d.epochs, lr=d.lr, batch_size=d.batch_size, max_grad_norm=d.max_grad_norm,
                               warmup_ratio=d.warmup_ratio, weight_decay=0.0, checkpoint_every=0, grad_accum=1)
    freeze_all(model)
    unfreeze(model, is_head)
    decoder = train(decoder_cfg, Prepared(model), data, Accelerator())
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
    directory = (Path(cfg.run.root) / "transfer" / cfg.task.name / record["method_tag"] / model_cfg.name
                 / f"lr={cfg.trainer.lr}" / f"seed={cfg.trainer.seed}")
    results.write(directory, record)
    main = cfg.task.main_metric
    print(f"transfer {record['method_tag']} -> {cfg.task.name}: decoder-only {decoder.best['dev'][main]:.4f}, "
          f"full {full.best['dev'][main]:.4f}")
    return record


def transfer_runs(cfg: DictConfig) -> list[dict]:
    return [transfer_one(cfg, source) for source in source_runs(cfg)]
