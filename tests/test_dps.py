"""DPS_Mix after its reference code: exploration stages mix toward the pretrained weights under per-step column
masks and average the masked squared gradients by times kept; exploitation keeps each layer's top (1 - p) by that
average and mixes toward the stage-start weights; the Linear weights of the encoder, the pooler and the head are
masked as in the reference, everything else trains densely."""

import math

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from spafit_exp.methods import apply_method, method_options
from spafit_exp.methods.dps import dps_linears
from tests.helpers import tiny_model

P = 0.3


def dps(update_ratio=0.25, family="bert", **kw):
    cfg = {"name": "dps_mix", "tag": "dps_mix", "lr": 1e-3, "drop": P, "update_ratio": update_ratio,
           "decay_from": 50, "seed": 0, **kw}
    return apply_method(tiny_model(family), method_options(OmegaConf.create(cfg)))


def batch(step):
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(3, 100, (4, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (4,), generator=g)}


def run(prepared, steps, total=8, watch=None):
    """The loop's order: on_schedule, then forward/backward, before_step, AdamW step; `watch(step)` after backward."""
    model = prepared.model
    prepared.on_schedule(total)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(1, steps + 1):
        model(**batch(step)).loss.backward()
        if watch is not None:
            watch(step)
        prepared.before_step()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return opt


def test_stages_alternate_every_update_ratio_of_the_run():
    schedule = dps(update_ratio=0.25)
    schedule.on_schedule(8)  # U = 2
    assert [schedule.stage(s) for s in range(1, 7)] == [
        (True, True), (True, False), (False, True), (False, False), (True, True), (True, False)]


def test_exploration_masks_columns_mixes_toward_pretrained_and_masks_gradients():
    prepared = dps()
    schedule, model = prepared, prepared.model
    layer, module = schedule.layers[0], schedule.modules[0]
    seen = {}

    def watch(step):
        mask = layer.mask
        assert mask.shape == (1, module.in_features) and set(mask.unique().tolist()) <= {0.0, 1.0}
        # W receives the gradient in kept columns only; biases, LayerNorm, embeddings train densely
        assert torch.all(module.weight.grad[:, mask[0] == 0] == 0)
        assert module.bias.grad.abs().sum() > 0
        assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
        seen[step] = mask.clone()

    run(prepared, steps=2, watch=watch)
    assert not torch.equal(seen[1], seen[2])  # a fresh mask every exploration step
    # the training forward mixes toward θ0: dropped columns are the pretrained weights
    x = torch.randn(3, module.in_features)
    mixed = layer.pretrained + layer.mask * (module.weight - layer.pretrained) / (1 - P)
    assert torch.allclose(module(x), F.linear(x, mixed, module.bias), atol=1e-6)
    module.eval()  # evaluation uses W itself
    assert torch.allclose(module(x), F.linear(x, module.weight, module.bias))


def test_exploitation_keeps_top_mean_squared_gradient_per_layer():
    """The exploitation mask is the top (1 - p) of sum(g^2) / times kept over the exploration stage, per layer,
    computed here from W.grad (= M ⊙ dL/dW') and the masks alone. A random mask of the same size fails this."""
    prepared = dps()
    schedule = prepared
    sums = [torch.zeros_like(layer.pretrained) for layer in schedule.layers]
    kept = [torch.zeros(layer.pretrained.shape[1]) for layer in schedule.layers]
    checked = []

    def watch(step):
        pairs = list(zip(schedule.layers, schedule.modules))
        if step <= 2:  # exploration (U = 2)
            for i, (layer, module) in enumerate(pairs):
                sums[i] += module.weight.grad ** 2
                kept[i] += layer.mask[0]
            return
        for i, (layer, module) in enumerate(pairs):  # step 3: the first exploitation step
            score = sums[i] / kept[i].clamp(min=1)[None]
            count = math.ceil(score.numel() * (1 - P))
            expected = score >= score.flatten().sort(descending=True).values[count - 1]
            assert torch.equal(layer.mask.bool(), expected), f"layer {i}"
            assert torch.equal(layer.target, module.weight)  # mixes toward the weights at the stage start
            assert torch.all(module.weight.grad[~expected] == 0)
            checked.append(i)

    run(prepared, steps=3, watch=watch)
    assert len(checked) == len(schedule.layers) > 0


def test_dropout_is_off_and_per_step_count_recorded():
    prepared = dps()
    assert all(m.p == 0.0 for m in prepared.model.modules() if isinstance(m, nn.Dropout))
    masked = sum(m.weight.numel() for m in dps_linears(prepared.model))
    dense = sum(p.numel() for p in prepared.model.parameters())
    assert prepared.info["dense_trainable"] == dense
    assert prepared.info["trainable"] == dense - masked + math.ceil(masked * (1 - P))


def test_pooler_and_head_are_masked_as_in_the_reference():
    """The reference makes BertPooler.dense and the sequence classifier DPSMix layers too (modeling_bert.py);
    RoBERTa's head (dense + out_proj) stands where they are. Their gradients are column-masked like the encoder's."""
    encoder = {f"layer.{i}.{m}" for i in range(4) for m in ("attention.self.query", "attention.self.key",
                                                               "attention.self.value", "attention.output.dense",
                                                               "intermediate.dense", "output.dense")}
    heads = {"bert": {"bert.pooler.dense", "classifier"}, "roberta": {"classifier.dense", "classifier.out_proj"}}
    for family, head in heads.items():
        prepared = dps(family=family)
        schedule = prepared
        wrapped = {id(m) for m in schedule.modules}
        names = {n.split("encoder.", 1)[-1] for n, m in prepared.model.named_modules() if id(m) in wrapped}
        assert names == encoder | head, family
        layers = {id(m): layer for m, layer in zip(schedule.modules, schedule.layers)}
        watched = {n: (m, layers[id(m)]) for n, m in prepared.model.named_modules() if n in head}
        seen = []

        def watch(step):
            for name, (module, layer) in watched.items():
                dropped = layer.mask[0] == 0
                assert dropped.any() and (~dropped).any(), name
                assert torch.all(module.weight.grad[:, dropped] == 0), name
                assert module.weight.grad[:, ~dropped].abs().sum() > 0, name
                seen.append(name)

        run(prepared, steps=1, watch=watch)
        assert sorted(seen) == sorted(head)
