"""Regularised FT (full_ft_l1 / full_ft_l2) on the subset paper's scale: Flair sums the task loss over the batch
and the penalty weighs against that sum, so our mean-loss gradient plus the hook equals Flair's gradient / B, with
B the samples of one optimizer step (grad accumulation included). A finished run records how far the encoder
moved (method_info)."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from spafit_exp.core.errors import ConfigError
from spafit_exp.methods import apply_method, method_options, validate_method
from spafit_exp.methods.regularized import DistancePenalty
from spafit_exp.run.app import run
from tests.conftest import TINY_RUN, compose
from tests.helpers import tiny_model


def trainer(batch_size, grad_accum=1):
    return OmegaConf.create({"lr": 1e-3, "weight_decay": 0.0, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8,
                             "batch_size": batch_size, "grad_accum": grad_accum})


def batches(count, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(3, 100, (size, 10), generator=g), torch.randint(0, 2, (size,), generator=g))
            for _ in range(count)]


def moved(model):
    """theta != theta0 everywhere, so sign(theta - theta0) is well defined and the L2 pull is not zero."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    return model


@pytest.mark.parametrize("kind", ["l1", "l2"])
@pytest.mark.parametrize("accum", [1, 2])
def test_batch_sum_gradient_is_flairs_summed_objective_over_the_steps_batch(kind, accum):
    lam, size = 0.3, 4
    data = batches(accum, size)
    ours = apply_method(tiny_model(), method_options(OmegaConf.create({"name": f"full_ft_{kind}", "tag": "r", "lr": 1e-3,
                                                                       "coefficient": lam, "reduction": "batch_sum"})))
    assert ours.make_optimizer(trainer(size, accum)) is not None  # the loop tells the batch here
    assert ours.info["step_batch"] == size * accum
    ours.model.eval()  # no dropout: both sides see the same forward
    flair = moved(tiny_model())
    flair.eval()
    moved(ours.model).load_state_dict(flair.state_dict())
    for ids, labels in data:  # Accelerate: each micro-batch's mean loss / grad_accum
        (ours.model(input_ids=ids, labels=labels).loss / accum).backward()
    ours.before_step()
    start = dict(tiny_model().named_parameters())
    # Flair: CrossEntropyLoss(reduction="sum") over the mini-batch, plus the penalty, one backward
    objective = sum(F.cross_entropy(flair(input_ids=ids).logits, labels, reduction="sum") for ids, labels in data)
    for name, p in flair.named_parameters():
        if "classifier" not in name:
            delta = p - start[name].detach()
            objective = objective + lam * (delta.abs().sum() if kind == "l1" else delta.square().sum() / 2)
    objective.backward()
    flair_grads = dict(flair.named_parameters())
    for name, p in ours.model.named_parameters():
        assert torch.allclose(p.grad * size * accum, flair_grads[name].grad, atol=1e-5, rtol=1e-4), name


def test_regularised_ft_defaults_to_the_batch_summed_scale():
    for method in ("full_ft_l1", "full_ft_l2"):
        assert compose([f"method={method}"]).method.reduction == "batch_sum"


def test_batch_sum_pull_needs_the_steps_batch():
    penalty = DistancePenalty(tiny_model(), "l1", 0.5, "batch_sum")
    with pytest.raises(RuntimeError, match="batch_sum"):
        penalty()
    penalty.per_step_batch(16)
    assert penalty.coefficient == pytest.approx(0.5 / 16)


def test_unknown_reduction_is_a_config_error():
    cfg = OmegaConf.create({"name": "full_ft_l1", "tag": "r", "lr": 1e-3, "coefficient": 0.1, "reduction": "avg"})
    with pytest.raises(ConfigError, match="method.reduction=avg"):
        validate_method(method_options(cfg), 4)


def test_run_records_the_encoders_distance_from_pretrained(tmp_path):
    # No weight decay: it moves every element off theta0 at once, and under Adam a strong L1 pull then swings each
    # one by ~lr per step, more than the task moves them in 4 steps.
    records = {}
    for coefficient in (0.0, 10.0):
        records[coefficient] = run(compose([*TINY_RUN, "method=full_ft_l1", f"method.coefficient={coefficient}",
                                            "trainer.weight_decay=0.0", f"run.root={tmp_path}"]))["method_info"]
    weak, strong = records[0.0], records[10.0]
    assert weak["step_batch"] == 8 and strong["per_element"] == pytest.approx(10.0 / 8)
    assert 0 < strong["encoder_l1"] < weak["encoder_l1"] and 0 < strong["encoder_l2"] < weak["encoder_l2"]
    assert weak["encoder_changed"] > 0
