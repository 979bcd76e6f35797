"""What the per-step methods move: after S optimizer steps of k elements each, at most S·k encoder elements differ
from the pre-trained weights (the head trains densely), in both update modes and with weight decay on — dense
decay would shrink every weight. `summarize` (method_info) counts the same elements."""

import pytest
import torch
from omegaconf import OmegaConf

from spafit_exp.engine.resume import trainable_state
from spafit_exp.methods import apply_method, method_options
from tests.helpers import tiny_model

TRAINER = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.1, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8})
K, STEPS = 30, 4


def per_step(name, update, candidates="encoder"):
    cfg = OmegaConf.create({"name": name, "tag": name, "lr": 1e-2, "k": K, "fraction": None,
                            "candidates": candidates, "update": update, "mu": "activation", "seed": 0})
    return apply_method(tiny_model(), method_options(cfg))


def train(prepared, steps=STEPS):
    model = prepared.model
    optimizer = prepared.make_optimizer(TRAINER)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(3, 100, (4, 12), generator=g)
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(0, 2, (4,), generator=g)).loss.backward()
        prepared.before_step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("update", ["masked_grad", "masked_step"])
@pytest.mark.parametrize("name", ["stoc_tuning", "top_tuning", "random_tuning"])
def test_at_most_steps_times_k_encoder_elements_change(name, update):
    prepared = per_step(name, update)
    start = {n: p.detach().clone() for n, p in prepared.model.named_parameters()}
    train(prepared)
    changed = {n: int((p != start[n]).sum()) for n, p in prepared.model.named_parameters()}
    encoder = sum(c for n, c in changed.items() if "classifier" not in n)
    assert K <= encoder <= STEPS * K
    assert all(changed[n] == p.numel() for n, p in prepared.model.named_parameters() if "classifier" in n)
    facts = prepared.summarize(trainable_state(prepared.model))
    assert facts["encoder_changed"] == encoder and facts["encoder_l1"] > 0


def test_no_embeddings_candidates_leave_the_embeddings_frozen():
    prepared = per_step("stoc_tuning", "masked_grad", candidates="no_embeddings")
    embeddings = {n: p.detach().clone() for n, p in prepared.model.named_parameters() if ".embeddings." in n}
    train(prepared)
    own = dict(prepared.model.named_parameters())
    assert all(torch.equal(own[n], p) and not own[n].requires_grad for n, p in embeddings.items())
    assert prepared.info["dense_trainable"] == sum(p.numel() for p in prepared.model.parameters() if p.requires_grad)
