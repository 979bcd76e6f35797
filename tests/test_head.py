"""`model.head=linear`: the subset paper's Flair decoder, one Linear on the first token's last-layer state (no pooler,
no dropout of its own), on BERT and RoBERTa, through the unpadded encoder, LoRA, DPS, the dry-run report, the
saved/reloaded trainable tensors and the fingerprint; every subset-paper preset uses it, the other presets keep
transformers' head."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from spafit_exp.core import fingerprint
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.spec import stored_specs
from spafit_exp.engine.artefacts import load_run, seeded_model
from spafit_exp.inputs.data import run_key
from spafit_exp.inputs.modeling import build_model
from spafit_exp.methods import apply_method, method_options
from spafit_exp.ops import unpad
from spafit_exp.ops.params import count_params, group_of, is_head, report
from spafit_exp.run.app import dry_run, run
from spafit_exp.run.config import run_dir
from spafit_exp.run.spec import resolve
from spafit_exp.run.validation import validate
from tests.conftest import TINY_RUN, compose

SMALL = ["model.init=random", "model.arch.num_hidden_layers=2", "model.arch.hidden_size=32",
         "model.arch.num_attention_heads=2", "model.arch.intermediate_size=64", "model.arch.vocab_size=100",
         "trainer.dry_run=true"]


def small(family: str, head: str = "linear", task: str = "sst2"):
    """A 2-layer random BERT or RoBERTa built by the project's own path (build_model), in eval mode."""
    model_name = "bert_base_cased" if family == "bert" else "roberta_base"
    cfg = resolve(compose([f"model={model_name}", f"task={task}", f"model.head={head}", *SMALL]))
    torch.manual_seed(0)
    return build_model(cfg.model, cfg.task).eval(), cfg


def batch(lengths=(9, 4, 6)):
    g = torch.Generator().manual_seed(1)
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    ids = torch.where(mask.bool(), torch.randint(5, 100, mask.shape, generator=g), 1)
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_linear_head_is_one_linear_on_the_first_token(family):
    model, _ = small(family)
    head = {n: tuple(p.shape) for n, p in model.named_parameters() if is_head(n)}
    assert head == {"classifier.weight": (2, 32), "classifier.bias": (2,)}
    assert not [n for n in dict(model.named_parameters()) if ".pooler." in n]  # Flair reads the hidden states
    assert {group_of(n) for n in head} == {"head"}
    inputs = batch()
    model.train()  # the head adds no dropout: with the encoder's dropout off, train and eval logits agree
    for module in model.base_model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        first = model.base_model(**inputs).last_hidden_state[:, 0]
        logits = model(**inputs).logits
    assert torch.allclose(logits, F.linear(first, model.classifier.weight, model.classifier.bias), atol=1e-6)
    default, _ = small(family, head="default")
    assert sum(p.numel() for n, p in default.named_parameters() if is_head(n) or ".pooler." in n) > 32 * 32


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_linear_head_unpadded_equals_padded(family):
    model, _ = small(family)
    inputs = {**batch(), "labels": torch.tensor([0, 1, 1])}
    padded = model(**inputs)
    padded.loss.backward()
    grad = model.classifier.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    with unpad.applied(model):
        unpadded = model(**inputs)
        unpadded.loss.backward()
    assert torch.allclose(padded.logits, unpadded.logits, atol=1e-5)
    assert torch.allclose(grad, model.classifier.weight.grad, atol=1e-5)


def test_token_tasks_keep_their_linear_token_head():
    model, _ = small("bert", task="conll2003")
    default, _ = small("bert", head="default", task="conll2003")
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if is_head(n)}
    assert shapes == {n: tuple(p.shape) for n, p in default.named_parameters() if is_head(n)} == {
        "classifier.weight": (9, 32), "classifier.bias": (9,)}


def test_subset_presets_use_the_linear_head_and_the_others_do_not():
    for preset in ("subset_table1", "subset_sizes", "lora_ranks"):
        for model in ("roberta_base", "bert_base_cased"):
            assert compose([f"experiment={preset}", f"model={model}"]).model.head == "linear", preset
    assert compose(["study=transfer"]).model.head == "linear"  # the transfer study's pretrained reference
    assert compose(["study=transfer", "model.head=default"]).model.head == "default"
    for preset in ("stoc_table1", "spafit_table2", "quick"):
        assert compose([f"experiment={preset}"]).model.head == "default", preset
    assert compose([]).model.head == "default"


def test_lora_r4_dry_run_is_the_papers_012_percent(capsys):
    """The acceptance of issue 34, item 3: 147,456 LoRA + 1,538 head parameters (2 labels) on RoBERTa-base."""
    dry_run(resolve(compose(["experiment=lora_ranks", "model=roberta_base", "method=lora_r4", "task=sst2",
                             "trainer.dry_run=true"])))
    lines = capsys.readouterr().out.strip().splitlines()
    head = next(line.split() for line in lines if line.split()[0] == "head")
    assert head[-2:] == ["1,538", "1,538"]
    assert lines[-1].startswith("trainable_params=148994 ")  # 147,456 LoRA + 1,538 head
    lora = sum(int(line.split()[-2].replace(",", "")) for line in lines if line.split()[0].startswith("layer."))
    assert lora == 147_456
    total = int(lines[-1].split("total_params=")[1]) - lora
    assert round(100 * 148_994 / total, 2) == 0.12


@pytest.mark.parametrize("method", ["frozen", "full_bitfit", "spafit_8_12_ii", "lora_r4", "multi_head"])
def test_methods_train_the_linear_head(method):
    cfg = resolve(compose(["model=bert_large_cased", f"method={method}", "model.head=linear", "trainer.dry_run=true"]))
    prepared = apply_method(build_model(cfg.model, cfg.task, device="meta"), cfg.method)
    trainable = {n for n, p in prepared.model.named_parameters() if p.requires_grad}
    assert {"classifier.weight", "classifier.bias"} <= trainable
    assert not [n for n in trainable if ".pooler." in n]
    if method == "frozen":
        assert trainable == {"classifier.weight", "classifier.bias"}
    row = next(line.split() for line in report(prepared.model).splitlines() if line.split()[0] == "head")
    assert row[-2:] == ["2,050", "2,050"]  # 1024 x 2 + 2, counted as head


def test_dps_mix_masks_the_linear_head_on_the_first_token():
    model, cfg = small("roberta")
    method = OmegaConf.create({"name": "dps_mix", "tag": "dps", "lr": 1e-4, "drop": 0.3, "update_ratio": 0.5,
                               "decay_from": 50, "seed": 0})
    prepared = apply_method(model, method_options(method))
    schedule = prepared
    layer = next(lay for m, lay in zip(schedule.modules, schedule.layers) if m is model.classifier)
    prepared.on_schedule(4)
    model.train()
    inputs = {**batch(), "labels": torch.tensor([0, 1, 1])}
    out = model(**inputs)  # the first training forward enters step 1: an exploration mask
    out.loss.backward()
    with torch.no_grad():
        first = model.base_model(**batch()).last_hidden_state[:, 0]
    mixed = layer.pretrained + layer.mask * (model.classifier.weight - layer.pretrained) / 0.7
    assert torch.allclose(out.logits, F.linear(first, mixed, model.classifier.bias), atol=1e-5)
    assert torch.all(model.classifier.weight.grad[:, layer.mask[0] == 0] == 0)


def test_lora_run_with_linear_head_saves_and_reloads(tmp_path):
    cfg = compose([*TINY_RUN, f"run.root={tmp_path}", "method=lora_r4", "model.head=linear"])
    record = run(cfg)
    assert record["status"] == "completed"
    assert record["fingerprint"]["settings"]["model.head"] == "linear"
    prepared, _ = load_run(run_dir(cfg))
    model = prepared.model.eval()
    assert isinstance(model.classifier, nn.Linear) and not list(model.base_model.pooler.parameters())
    from safetensors.torch import load_file

    saved = load_file(str(run_dir(cfg) / "trainable.safetensors"))
    assert {"classifier.weight", "classifier.bias"} <= set(saved)
    assert torch.equal(saved["classifier.weight"], model.classifier.weight)
    spec = resolve(cfg)
    assert not torch.equal(seeded_model(spec.model, spec.task, spec.trainer.seed).classifier.weight,
                           model.classifier.weight)  # the head trained
    # the transfer study rebuilds the primary run's model config, head included, for the secondary task
    out = run(compose([*TINY_RUN, f"run.root={tmp_path}", "study=transfer", f"study.run='{run_dir(cfg)}'",
                       "task=trec6", "study.decoder.epochs=1", "study.lr_from=trainer"]))
    assert out[0]["status"] == "completed" and "accuracy" in out[0]["metrics"]["decoder"]["dev"]


def test_head_is_in_the_fingerprint_and_the_cache_keys():
    linear, default = compose([*TINY_RUN, "model.head=linear"]), compose(TINY_RUN)
    assert fingerprint.settings(linear)["model.head"] == "linear"
    assert fingerprint.of(linear)["hash"] != fingerprint.of(default)["hash"]
    assert run_key(resolve(linear), "decoder") != run_key(resolve(default), "decoder")  # a pre-tuned decoder is per head


def test_records_without_a_head_key_rebuild_transformers_head():
    cfg = compose(TINY_RUN)
    old = OmegaConf.create(OmegaConf.to_container(cfg))
    del old.model["head"]
    model = build_model(*stored_specs(old))  # a record's config, as load_run reads it
    assert "bert.pooler.dense.weight" in dict(model.named_parameters())


def test_unknown_head_is_one_config_error():
    with pytest.raises(ConfigError, match=r"^model\.head=mlp: must be default or linear$"):
        validate(compose([*TINY_RUN, "model.head=mlp", "trainer.dry_run=true"]))


def test_peft_modules_to_save_keeps_the_first_token_pick():
    """peft's SEQ_CLS task copies the classifier into a ModulesToSaveWrapper: the copy still reads the first
    token, trains and is seen as head."""
    from peft import LoraConfig, get_peft_model

    model, _ = small("roberta")
    inputs = batch()
    with torch.no_grad():
        plain = model(**inputs).logits
    wrapped = get_peft_model(model, LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS")).eval()
    with torch.no_grad():
        assert torch.allclose(wrapped(**inputs).logits, plain, atol=1e-6)  # LoRA's B starts at zero
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad and "lora_" not in n]
    assert trainable and all(is_head(n) for n in trainable)


# SPAFIT Table 2's Params column as printed (M). It counts MNLI's 3-way head: with 2 labels SPAFIT-4-9-II and Full
# LoRA-II would round to 7.48 / 12.58 (README, docs/spafit.md). Full BitFit's 31.52M matches no bias-only reading.
PRINTED = {"full_ft": 333.58, "lora_i": 9.44, "lora_ii": 12.59, "spafit_8_12_i": 4.44, "spafit_8_12_ii": 5.88,
           "spafit_8_16_ii": 3.81, "spafit_4_9_i": 5.65, "spafit_4_9_ii": 7.49, "spafit_4_14_ii": 4.89}


def test_spafit_params_column_is_counted_with_mnlis_three_way_head():
    counts = {}
    for method in PRINTED:
        cfg = resolve(compose([f"method={method}", "model=bert_large_cased", "task=mnli"]))
        counts[method] = count_params(apply_method(build_model(cfg.model, cfg.task, device="meta"), cfg.method).model)[0]
    assert {m: round(c / 1e6, 2) for m, c in counts.items()} == PRINTED
    assert (counts["spafit_4_9_ii"], counts["lora_ii"]) == (7_485_443, 12_585_987)
    assert round((counts["spafit_4_9_ii"] - 1025) / 1e6, 2) == 7.48  # the 2-label count the paper does not print
