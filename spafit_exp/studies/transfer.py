"""Secondary-task transfer (subset paper, section 4.2): an encoder tuned on a primary task (any method; LoRA
merged) gets a fresh head for the secondary task (`task=`). First the head alone is tuned (decoder recipe, Table 4:
the decoder-only score), then the whole model is fine-tuned from there with the paper's Table 2 recipe
(conf/study/transfer.yaml: the full score), at the learning rate a search on the pretrained model chose for the
secondary task (`study.lr_from`, the same rate for every primary run). Both are scored like a run: selection on
dev, the task's reported split (test for CoNLL-2003 and TREC-6) recorded beside it."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed

from spafit_exp.core import fingerprint, results
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.run_dir import RunDir
from spafit_exp.core.spec import DecoderRecipe, ModelSpec, RunSpec, build, freeze, plain
from spafit_exp.engine.artefacts import load_run
from spafit_exp.engine.loop import train
from spafit_exp.inputs.data import load_task_data
from spafit_exp.inputs.modeling import build_model, build_tokenizer
from spafit_exp.methods import Method
from spafit_exp.selection.decoder import train_head
from spafit_exp.studies import best_lr, merged_encoder_state, read_runs, register, sources

PRETRAINED = "none:pretrained"  # the method tag of the pretrained reference's records


def secondary_lr(spec: RunSpec, model: str) -> tuple[float, dict | None]:
    """(learning rate, how it was chosen) for the full fine-tune on the secondary task. The paper selects it "based
    on a grid search conducted on the pretrained version of the model": study.lr_from names the finished full-FT
    runs of the secondary task on the pretrained `model` (a glob over an LR grid: `experiment=subset_table1
    method=full_ft` runs, or this study's own `study.run=null` records) and the rate with the best mean dev main
    metric over seeds is taken. Without it the pretrained reference runs at trainer.lr (that is the search: sweep
    trainer.lr); a primary run needs it, or `study.lr_from=trainer` to take trainer.lr deliberately."""
    lr_from, task = spec.study.get("lr_from"), spec.task.name
    if lr_from is None and spec.study.get("run") is not None:
        raise ConfigError("study.lr_from: required with study.run: the full-FT runs of the secondary task on the "
                          f"pretrained model whose best rate every transfer uses (e.g. study.lr_from='outputs/"
                          f"subset_table1/{task}/full_ft/{model}/*/*'), or study.lr_from=trainer for trainer.lr")
    if lr_from is None or lr_from == "trainer":
        return float(spec.trainer.lr), (None if lr_from is None else {"from": "trainer"})
    runs = read_runs("study.lr_from", lr_from)
    for path, record in runs:
        # a transfer of a primary run records that run's method (full_ft too): only its reference is pretrained
        study = record.get("experiment") == "transfer"
        pretrained_ft = record.get("method_tag") == PRETRAINED if study else record.get("method") == "full_ft"
        if record.get("task") != task or not pretrained_ft or record.get("model") != model:
            raise ConfigError(f"study.lr_from: {path} is {record.get('task')} / {record.get('method_tag')} / "
                              f"{record.get('model')}, not full fine-tuning of the pretrained {model} on {task}")
    try:
        lr, means = best_lr([record for _, record in runs])
    except ValueError:
        raise ConfigError(f"study.lr_from={lr_from}: no completed run with a dev {spec.task.main_metric}") from None
    edge = len(means) > 1 and lr in (min(means), max(means))
    if edge:
        print(f"warning: study.lr_from: the best rate {lr:g} is at the edge of the {len(means)} rates searched; "
              "extend the search past it")
    return lr, {"from": str(lr_from), "selection": f"dev.{spec.task.main_metric}", "runs": len(runs), "lr": lr,
                "edge": edge, "mean_by_lr": {f"{rate:g}": mean for rate, mean in means.items()}}


def transfer_spec(spec: RunSpec, model: ModelSpec, model_config: dict, lr: float, seed: int) -> RunSpec:
    """The study's spec with the primary run's model (`model_config`: as its record keeps it) at the secondary
    task's rate and the primary run's seed. The transfer writes a record of its own: its config and fingerprint
    are those of the changed config."""
    config = plain(spec.config)
    config["model"] = plain(model_config)
    config["trainer"].update(lr=lr, seed=seed, checkpoint_every=0)
    return replace(spec, model=model, trainer=replace(spec.trainer, lr=lr, seed=seed, checkpoint_every=0),
                   run=replace(spec.run, fingerprint=freeze(fingerprint.of(config))), config=freeze(config))


def transfer_one(spec: RunSpec, source: Path | None, lr: float, search: dict | None) -> dict:
    """One primary run (None: the pretrained model) -> one record. A primary run's repetition is paired with its
    own seed (record `seed`), so the seeds of a primary cell become the seeds of its transfer cell."""
    started = time.time()
    src, encoder_state, model_spec, model_config, seed = None, None, spec.model, spec.config["model"], spec.trainer.seed
    if source is not None:
        method, src = load_run(source)
        encoder_state = merged_encoder_state(method.model)
        model_config, seed = src["config"]["model"], int(src["seed"])
        model_spec = build(ModelSpec, model_config, "model", stored=True)
    run_spec = transfer_spec(spec, model_spec, model_config, lr, seed)
    set_seed(seed)
    model = build_model(model_spec, spec.task)  # fresh head for the secondary task, seeded
    if encoder_state is not None:
        model.base_model.load_state_dict(encoder_state, strict=False)
    data = load_task_data(run_spec, build_tokenizer(model_spec))

    decoder = train_head(run_spec, build(DecoderRecipe, spec.study["decoder"], "study.decoder"), model, data)
    for p in model.parameters():
        p.requires_grad_(True)
    full = train(run_spec, Method(model), data, Accelerator())

    # The decoder-only scores ride along as `decoder_<metric>` in every split of `best`, so tables read both.
    best = {"epoch": full.best["epoch"]}
    for split in ("dev", "test", "train"):
        scores = {**full.best.get(split, {}), **{f"decoder_{k}": v for k, v in decoder.best.get(split, {}).items()}}
        if scores:
            best[split] = scores
    src = src or {"task": "none", "method_tag": "pretrained"}  # tagged PRETRAINED below
    record = results.base_record(run_spec)
    record.update(status="completed", experiment="transfer", method_tag=f"{src['task']}:{src['method_tag']}",
                  method=src.get("method", "pretrained"), model=model_spec.name, source_run=str(source) if source else None,
                  source={k: src.get(k) for k in ("experiment", "task", "method_tag", "lr", "seed")},
                  lr_search=search,
                  metrics={"best": best, "epochs": full.epochs, "decoder": decoder.best, "selection_split": "dev",
                           "reported_split": spec.task.report},
                  timing={"wall_s": time.time() - started})
    # the one writer: the directory's lock, its fingerprint check (another recipe's record: run.force=true)
    RunDir.of(spec.run.root, "transfer", spec.task.name, record.method_tag, model_spec.name, lr, seed).write(
        record, force=bool(spec.run.force))
    main, split = spec.task.main_metric, spec.task.report
    print(f"transfer {record.method_tag} -> {spec.task.name} (lr {lr:g}, seed {seed}), {split} {main}: "
          f"decoder-only {decoder.best[split][main]:.4f}, full {full.best[split][main]:.4f}")
    return record.to_json()


@register("transfer")
def transfer_runs(spec: RunSpec) -> list[dict]:
    plan = sources(spec.study)
    models = {record["model"] if record else spec.model.name for _, record in plan}
    rates = {model: secondary_lr(spec, model) for model in sorted(models)}  # every input checked before training
    return [transfer_one(spec, source, *rates[record["model"] if record else spec.model.name])
            for source, record in plan]
