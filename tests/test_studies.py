"""Generality studies: the MLM probe leaves the encoder untouched, transfer loads the primary run's encoder
exactly (LoRA merged), and the L1/L2 regulariser's gradient is the analytic one."""

import pytest
import torch
from omegaconf import OmegaConf

from spafit_exp import results
from spafit_exp.app import run
from spafit_exp.checkpoint import load_run
from spafit_exp.methods import apply_method
from spafit_exp.methods.regularized import DistancePenalty
from spafit_exp.studies import merged_encoder_state
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
    prepared = apply_method(tiny_model(), OmegaConf.create({"name": "full_ft_l1", "tag": "l1", "lr": 1e-5, "coefficient": 0.1,
                                                       "reduction": "mean"}))
    assert not any("classifier" in n for n, _ in [(n, p) for n, p in prepared.model.named_parameters()
                                                    if any(p is q for q, _ in prepared.before_step.pairs)])


def test_mlm_probe_freezes_encoder(tmp_path):
    from spafit_exp.modeling import build_tokenizer
    from spafit_exp.studies.mlm_probe import encoder_from, probe

    cfg = compose([*TINY_RUN, "study=mlm_probe", "study.train_lines=24", "study.test_lines=8", "study.epochs=1",
                   f"run.root={tmp_path}"])
    encoder, model_cfg, _ = encoder_from(cfg, None)
    before = {n: p.detach().clone() for n, p in encoder.state_dict().items()}
    outcome = probe(cfg, encoder, build_tokenizer(model_cfg))
    assert 0.0 <= outcome["p_at_1"] <= 1.0 and outcome["masked_tokens"] > 0
    after = encoder.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_mlm_probe_study_writes_record(tmp_path):
    primary = run(compose([*TINY_RUN, f"run.root={tmp_path}"]))
    source = results.run_dir(compose([*TINY_RUN, f"run.root={tmp_path}"]))
    records = run(compose([*TINY_RUN, f"run.root={tmp_path}", "study=mlm_probe", f"study.run={source}",
                           "study.train_lines=24", "study.test_lines=8", "study.epochs=1"]))
    assert records[0]["experiment"] == "mlm_probe" and records[0]["method_tag"] == primary["method_tag"]
    written = results.read(tmp_path / "mlm_probe/rte/full_ft/tiny_bert/lr=0.001/seed=1")
    assert written["status"] == "completed" and "p_at_1" in written["metrics"]["best"]["dev"]


def test_transfer_loads_primary_encoder_exactly(tmp_path):
    """A LoRA primary run: the merged encoder in a plain model computes what the run's LoRA encoder computes."""
    cfg = compose([*TINY_RUN, f"run.root={tmp_path}", "method=lora", "method.r=4", "method.alpha=8"])
    run(cfg)
    prepared, record = load_run(results.run_dir(cfg))
    ids = torch.randint(3, 1000, (2, 9))
    prepared.model.eval()
    with torch.no_grad():
        reference = prepared.model.base_model(input_ids=ids).last_hidden_state
    state = merged_encoder_state(prepared.model)
    from spafit_exp.modeling import build_model

    plain = build_model(cfg.model, compose(["task=trec6"]).task)  # another task: a fresh 6-way head
    plain.base_model.load_state_dict(state, strict=True)
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(plain.base_model(input_ids=ids).last_hidden_state, reference, atol=1e-5)

    out = run(compose([*TINY_RUN, f"run.root={tmp_path}", "study=transfer", f"study.run='{results.run_dir(cfg)}'",
                       "task=trec6", "study.decoder.epochs=1"]))
    assert out[0]["experiment"] == "transfer" and out[0]["method_tag"] == f"rte:{record['method_tag']}"
    assert "accuracy" in out[0]["metrics"]["decoder"]["dev"] and "accuracy" in out[0]["metrics"]["best"]["dev"]
