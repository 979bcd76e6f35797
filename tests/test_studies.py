"""Generality studies: the MLM probe leaves the encoder untouched, transfer loads the primary run's encoder
exactly (LoRA merged), and the L1/L2 regulariser's gradient is the analytic one."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from spafit_exp.core import results
from spafit_exp.core.errors import ConfigError
from spafit_exp.engine.artefacts import load_run
from spafit_exp.methods import apply_method, method_options
from spafit_exp.methods.regularized import DistancePenalty
from spafit_exp.report import tables
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from spafit_exp.run.spec import resolve
from spafit_exp.studies import merged_encoder_state, source_runs
from tests.conftest import TINY_RUN, compose
from tests.helpers import tiny_model


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_penalty_gradient_is_analytic(kind):
    model = tiny_model()
    penalty = DistancePenalty(model, kind, 0.3)
    with torch.no_grad():
        for p, _ in penalty.pairs:
            p.add_(torch.randn_like(p) * 0.01)
    # autograd of the penalty value itself
    value = sum(((p - p0).abs().sum() if kind == "l1" else 0.5 * (p - p0).square().sum()) for p, p0 in penalty.pairs)
    expected = torch.autograd.grad(0.3 * value, [p for p, _ in penalty.pairs])
    for p, _ in penalty.pairs:
        p.grad = torch.zeros_like(p)
    penalty()
    for (p, _), g in zip(penalty.pairs, expected):
        assert torch.allclose(p.grad, g, atol=1e-7)
    assert penalty.value() == pytest.approx(float(0.3 * value), rel=1e-4)


def test_full_ft_l1_leaves_head_unpenalised():
    prepared = apply_method(tiny_model(), method_options(OmegaConf.create({"name": "full_ft_l1", "tag": "l1", "lr": 1e-5,
                                                                          "coefficient": 0.1, "reduction": "mean"})))
    assert not any("classifier" in n for n, _ in [(n, p) for n, p in prepared.model.named_parameters()
                                                    if any(p is q for q, _ in prepared.penalty.pairs)])


def test_mlm_probe_freezes_encoder(tmp_path):
    from spafit_exp.inputs.modeling import build_tokenizer
    from spafit_exp.studies.mlm_probe import encoder_from, probe

    cfg = resolve(compose([*TINY_RUN, "study=mlm_probe", "study.train_lines=24", "study.test_lines=8",
                           "study.epochs=1", f"run.root={tmp_path}"]))
    encoder, model_cfg, _ = encoder_from(cfg, None)
    before = {n: p.detach().clone() for n, p in encoder.state_dict().items()}
    outcome = probe(cfg, encoder, build_tokenizer(model_cfg))
    assert 0.0 <= outcome["p_at_1"] <= 1.0 and outcome["masked_tokens"] > 0
    after = encoder.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_mlm_probe_study_writes_record(tmp_path):
    primary = run(compose([*TINY_RUN, f"run.root={tmp_path}"]))
    source = run_dir(compose([*TINY_RUN, f"run.root={tmp_path}"]))
    records = run(compose([*TINY_RUN, f"run.root={tmp_path}", "study=mlm_probe", f"study.run={source}",
                           "study.train_lines=24", "study.test_lines=8", "study.epochs=1", "task=sst2"]))
    assert records[0]["experiment"] == "mlm_probe" and records[0]["method_tag"] == primary["method_tag"]
    written = results.read(tmp_path / "mlm_probe/rte/full_ft/tiny_bert/lr=0.001/seed=1")
    assert written["status"] == "completed" and "p_at_1" in written["metrics"]["best"]["dev"]
    # the probed run's task labels the table's column (the study's own `task=` is irrelevant to a probe)
    assert written["config"]["task"]["display"] == "RTE"
    assert "| RTE " in tables.write_tables(tables.collect(tmp_path), tmp_path / "t")["mlm_probe"].read_text()


def test_transfer_loads_primary_encoder_exactly(tmp_path):
    """A LoRA primary run: the merged encoder in a plain model computes what the run's LoRA encoder computes."""
    cfg = compose([*TINY_RUN, f"run.root={tmp_path}", "method=lora", "method.r=4", "method.alpha=8"])
    run(cfg)
    prepared, record = load_run(run_dir(cfg))
    ids = torch.randint(3, 1000, (2, 9))
    prepared.model.eval()
    with torch.no_grad():
        reference = prepared.model.base_model(input_ids=ids).last_hidden_state
    state = merged_encoder_state(prepared.model)
    from spafit_exp.inputs.modeling import build_model

    plain = build_model(resolve(cfg).model, resolve(compose(["task=trec6"])).task)  # another task: a fresh 6-way head
    plain.base_model.load_state_dict(state, strict=True)
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(plain.base_model(input_ids=ids).last_hidden_state, reference, atol=1e-5)

    out = run(compose([*TINY_RUN, f"run.root={tmp_path}", "study=transfer", f"study.run='{run_dir(cfg)}'",
                       "task=trec6", "study.decoder.epochs=1", "study.lr_from=trainer"]))
    assert out[0]["experiment"] == "transfer" and out[0]["method_tag"] == f"rte:{record['method_tag']}"
    assert "accuracy" in out[0]["metrics"]["decoder"]["dev"] and "accuracy" in out[0]["metrics"]["best"]["dev"]


# The transfer study with its own recipe (4 epochs, batch 16, ...) on a few rows of TREC-6 (reported on its test set).
TRANSFER = ["model=tiny_bert", "trainer.max_train_samples=32", "trainer.max_eval_samples=32", "trainer.max_len=64",
            "study=transfer", "task=trec6", "study.decoder.epochs=1"]


def _finished(root, score, lr, seed, status="completed", experiment="search", task="trec6", method="full_ft",
              method_tag=None, model="tiny_bert"):
    """A hand-written record of a finished run (dev score `score`) in its run directory."""
    tag = method_tag or method
    directory = root / experiment / task / tag / model / f"lr={lr}" / f"seed={seed}"
    directory.mkdir(parents=True)
    record = {"schema": 1, "status": status, "experiment": experiment, "task": task, "method": method,
              "method_tag": tag, "model": model, "lr": lr, "seed": seed, "main_metric": "accuracy",
              "metrics": {"best": {"epoch": 1, "dev": {"accuracy": score} if score is not None else {}}}}
    (directory / "results.json").write_text(json.dumps(record))
    return directory


def test_transfer_trains_with_the_papers_recipe_and_records_the_reported_split(tmp_path, monkeypatch):
    """Subset paper Table 2 for the full fine-tune (not the trainer defaults: 3 epochs, weight decay 0.01, clip 1,
    no warm-up); TREC-6's test scores recorded and printed by the tables, the epoch chosen on its dev split."""
    from spafit_exp.studies import transfer

    seen, real = [], transfer.train
    monkeypatch.setattr(transfer, "train", lambda cfg, *a, **k: seen.append(cfg.trainer) or real(cfg, *a, **k))
    record = run(compose([*TRANSFER, f"run.root={tmp_path}", "trainer.lr=1e-3"]))[0]
    (t,) = seen  # the full fine-tune (the decoder's head-only training has its own recipe)
    assert (t.epochs, t.batch_size, t.weight_decay, t.max_grad_norm, t.warmup_ratio, t.schedule) == \
        (4, 16, 0.0, 5.0, 0.1, "linear")
    assert len(record["metrics"]["epochs"]) == 4
    assert compose(["study=transfer", "task=qnli"]).trainer.epochs == 2
    metrics = record["metrics"]
    assert metrics["selection_split"] == "dev" and metrics["reported_split"] == "test"
    best = metrics["best"]
    assert best["test"] == {**metrics["epochs"][best["epoch"] - 1]["test"], "decoder_accuracy":
                            metrics["decoder"]["test"]["accuracy"]}
    cell = tables.select_lr(tables.collect(tmp_path)).iloc[0]
    assert cell["reported_split"] == "test" and cell["mean.accuracy"] == best["test"]["accuracy"]
    assert cell["mean.decoder_accuracy"] == metrics["decoder"]["test"]["accuracy"]


def test_transfer_lr_is_the_best_rate_of_a_search_on_the_pretrained_model(tmp_path):
    primary = compose([*TINY_RUN, f"run.root={tmp_path / 'runs'}"])
    run(primary)
    for lr, scores in [(1e-4, [0.9, 0.1]), (1e-3, [0.6, 0.6]), (1e-2, [0.4, 0.5])]:  # best single run: 1e-4
        for seed, score in enumerate(scores, 1):
            _finished(tmp_path, score, lr, seed)
    _finished(tmp_path, None, 1e-1, 1, status="failed")  # not a rate tried
    out = run(compose([*TRANSFER, f"run.root={tmp_path / 'runs'}", f"study.run='{run_dir(primary)}'",
                       f"study.lr_from={tmp_path}/search/trec6/full_ft/tiny_bert/*/*", "trainer.epochs=1",
                       "trainer.lr=5e-5", "trainer.seed=7"]))
    record = out[0]
    assert record["lr"] == 1e-3 and record["config"]["trainer"]["lr"] == 1e-3
    assert record["seed"] == 1 and record["source"]["seed"] == 1  # paired with the primary run's repetition
    assert record["lr_search"]["mean_by_lr"] == {"0.0001": 0.5, "0.001": 0.6, "0.01": 0.45}
    assert not record["lr_search"]["edge"]
    assert results.read(tmp_path / "runs/transfer/trec6/rte:full_ft/tiny_bert/lr=0.001/seed=1") == record


@pytest.mark.parametrize("case", ["missing", "other_task", "other_method", "other_model", "none_completed",
                                  "transferred_encoder"])
def test_transfer_refuses_an_lr_without_a_search_on_the_pretrained_model(tmp_path, case):
    source = _finished(tmp_path, 0.7, 1e-3, 1, experiment="e", task="rte")
    search = tmp_path / "s"
    _finished(search, 0.5 if case != "none_completed" else None, 1e-3, 1,
              status="completed" if case != "none_completed" else "failed",
              task="sst2" if case == "other_task" else "trec6", method="lora" if case == "other_method" else "full_ft",
              model="minilm" if case == "other_model" else "tiny_bert",
              **({"experiment": "transfer", "method_tag": "rte:full_ft"} if case == "transferred_encoder" else {}))
    spec = [] if case == "missing" else [f"study.lr_from={search}/*/*/*/*/*/*"]
    with pytest.raises(ConfigError, match="study.lr_from"):
        run(compose([*TRANSFER, f"run.root={tmp_path}", f"study.run='{source}'", *spec]))
    assert not (tmp_path / "transfer").exists()


def test_a_glob_over_a_grid_studies_each_cells_chosen_rate_with_all_its_seeds(tmp_path):
    chosen = [_finished(tmp_path, score, 1e-4, seed, experiment="e", task="rte") for seed, score in [(1, .5), (2, .7)]]
    for seed, score in [(1, 0.8), (2, 0.2)]:  # the best single run, but the lower mean
        _finished(tmp_path, score, 1e-3, seed, experiment="e", task="rte")
    _finished(tmp_path, None, 1e-2, 1, status="failed", experiment="e", task="rte")
    lora = _finished(tmp_path, 0.6, 1e-2, 1, experiment="e", task="rte", method="lora")
    cfg = compose(["study=mlm_probe", f"study.run='{tmp_path}/e/rte/*/tiny_bert/*/*'"])
    assert source_runs(resolve(cfg).study) == sorted([*chosen, lora], key=str)
