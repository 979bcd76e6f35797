"""Each method trains exactly its intended tensors: after a few optimizer steps every other tensor is bit-identical."""

import re

import pytest
import torch
from omegaconf import OmegaConf

from spafit_exp.inputs.modeling import build_model
from spafit_exp.methods import apply_method, available, method_options
from spafit_exp.ops.params import count_params
from spafit_exp.run.spec import resolve
from tests.conftest import compose
from tests.helpers import changed, snapshot, tiny_model, train_steps

FAMILIES = ["bert", "roberta"]
LORA_II = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")


def method_cfg(name: str, **kw):
    base = {"full_ft": {}, "full_bitfit": {},
            "lora": {"lora_type": "II", "r": 4, "alpha": 8, "dropout": 0.0},
            "spafit": {"n1": 0, "n2": 1, "lora_type": "II", "r": 4, "alpha": 8, "dropout": 0.0}}[name]
    return method_options(OmegaConf.create({"name": name, "tag": name, "lr": 1e-3, **base, **kw}))


def layer(name):
    m = re.search(r"\.layer\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def run(name, family, **kw):
    model = tiny_model(family)
    before = snapshot(model)
    prepared = apply_method(model, method_cfg(name, **kw))
    train_steps(prepared)
    return before, snapshot(prepared.model), prepared


def test_registry_lists_methods():
    assert {"full_ft", "full_bitfit", "lora", "spafit"} <= set(available())


@pytest.mark.parametrize("family", FAMILIES)
def test_full_ft_changes_every_used_tensor(family):
    before, after, _ = run("full_ft", family)
    assert changed(before, after) == set(before)


@pytest.mark.parametrize("family", FAMILIES)
def test_full_bitfit(family):
    before, after, _ = run("full_bitfit", family)
    expected = {n for n in before
                if "classifier" in n
                or (n.endswith(".bias") and layer(n) is not None)
                or n.endswith("embeddings.LayerNorm.bias")
                or n.endswith("pooler.dense.bias")}  # BitFit's reference trains BERT's pooler bias too
    assert changed(before, after) == expected
    assert ("bert.pooler.dense.bias" in expected) == (family == "bert")
    assert not any(n.endswith("pooler.dense.weight") for n in expected)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("lora_type", ["I", "II"])
def test_lora_adapts_exact_modules(family, lora_type):
    before, after, prepared = run("lora", family, lora_type=lora_type)
    assert changed(before, after) == {n for n in before if "classifier" in n}
    targets = LORA_II if lora_type == "II" else LORA_II[:3]
    adapted = {n.split(".lora_")[0] for n, _ in prepared.model.named_parameters() if "lora_" in n}
    expected = {f"{family}.encoder.layer.{i}.{t}" for i in range(4) for t in targets}
    assert adapted == expected  # in particular never the FFN's output.dense
    lora = [p for n, p in prepared.model.named_parameters() if "lora_B" in n]
    assert lora and all(p.requires_grad and p.abs().sum() > 0 for p in lora)  # B starts at 0: it trained


@pytest.mark.parametrize("family", FAMILIES)
def test_spafit_groups(family):
    before, after, prepared = run("spafit", family, n1=0, n2=1)
    group3_bias = re.compile(r"\.layer\.\d+\.(intermediate\.dense|output\.dense|output\.LayerNorm)\.bias$")
    expected = {n for n in before
                if "classifier" in n
                or (layer(n) == 1 and n.endswith(".bias"))
                or (layer(n) in (2, 3) and group3_bias.search(n))}
    assert changed(before, after) == expected
    adapted = {n.split(".lora_")[0] for n, _ in prepared.model.named_parameters() if "lora_" in n}
    assert adapted == {f"{family}.encoder.layer.{i}.{t}" for i in (2, 3) for t in LORA_II}
    assert prepared.info["groups"] == {"frozen": [0], "bitfit": [1], "lora": [2, 3]}


def test_spafit_no_backward_through_frozen_group():
    """Group-1 outputs carry no autograd graph: backward stops at the first trainable layer."""
    prepared = apply_method(tiny_model("bert"), method_cfg("spafit", n1=1, n2=2))
    seen = {}
    for i, block in enumerate(prepared.model.bert.encoder.layer):
        block.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, out[0].requires_grad
                                                                                  if isinstance(out, tuple)
                                                                                  else out.requires_grad))
    ids = torch.randint(3, 100, (2, 8))
    prepared.model(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    assert seen == {0: False, 1: False, 2: True, 3: True}


def test_spafit_rejects_bad_groups():
    from spafit_exp.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"need -1 <= n1 < n2 < 4"):
        apply_method(tiny_model("bert"), method_cfg("spafit", n1=2, n2=4))


def test_spafit_all_lora_and_all_bitfit_edges():
    """n1=-1 freezes nothing; n2=L-1 leaves no LoRA group (pure layered BitFit)."""
    _, _, prepared = run("spafit", "bert", n1=-1, n2=3)
    assert not any("lora_" in n for n, _ in prepared.model.named_parameters())
    assert prepared.info["groups"] == {"frozen": [], "bitfit": [0, 1, 2, 3], "lora": []}


# SPAFIT Table 2, BERT-large-cased with a 2-label head: the Params column, exactly.
TABLE2 = {
    "full_ft": 333_581_314, "lora_i": 9_439_234, "lora_ii": 12_584_962,
    "spafit_8_12_i": 4_440_066, "spafit_8_12_ii": 5_881_858, "spafit_8_16_ii": 3_805_186,
    "spafit_4_9_i": 5_649_410, "spafit_4_9_ii": 7_484_418, "spafit_4_14_ii": 4_888_578,
}


@pytest.mark.parametrize("method,expected", TABLE2.items(), ids=list(TABLE2))
def test_spafit_table2_parameter_counts(method, expected):
    cfg = resolve(compose([f"method={method}", "model=bert_large_cased", "task=rte"]))
    prepared = apply_method(build_model(cfg.model, cfg.task, device="meta"), cfg.method)
    assert count_params(prepared.model)[0] == expected


def test_full_bitfit_count_bert_large():
    cfg = resolve(compose(["method=full_bitfit", "model=bert_large_cased"]))
    prepared = apply_method(build_model(cfg.model, cfg.task, device="meta"), cfg.method)
    # 24 layers x (q,k,v,attn-out 4x1024 + 2 LayerNorm biases 2x1024 + intermediate 4096 + output 1024)
    # + embeddings LayerNorm bias 1024 + pooler bias 1024 + head 1024x2+2
    assert count_params(prepared.model)[0] == 24 * (4 * 1024 + 2 * 1024 + 4096 + 1024) + 1024 + 1024 + 2050


def test_roberta_spafit_counts_resolve_from_model():
    cfg = resolve(compose(["method=spafit", "model=roberta_base", "method.n1=3", "method.n2=7"]))
    prepared = apply_method(build_model(cfg.model, cfg.task, device="meta"), cfg.method)
    # RoBERTa head: dense 768x768+768 and out_proj 768x2+2
    head = 768 * 768 + 768 + 768 * 2 + 2
    g2 = 4 * (4 * 768 + 2 * 768 + 3072 + 768)
    g3 = 4 * (4 * 64 * (768 + 768) + 3072 + 768 + 768)
    assert count_params(prepared.model)[0] == head + g2 + g3
