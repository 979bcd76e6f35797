"""Unpadded encoder: same outputs and gradients as the padded model, while the dense layers see real tokens only.
The whole loop with and without it: tests/test_loop_options.py."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
)

from spafit_exp.core.errors import ConfigError
from spafit_exp.engine.loop import unpadded
from spafit_exp.ops import unpad

LENGTHS = [12, 5, 8, 3]  # 28 real tokens: a bucket size, so no filler
HEADS = {("bert", "seq"): (BertConfig, BertForSequenceClassification),
         ("roberta", "seq"): (RobertaConfig, RobertaForSequenceClassification),
         ("bert", "token"): (BertConfig, BertForTokenClassification),
         ("roberta", "token"): (RobertaConfig, RobertaForTokenClassification)}


def _model(family: str, head: str, problem: str, lora: bool):
    config_cls, model_cls = HEADS[family, head]
    torch.manual_seed(0)
    num_labels = 1 if problem == "regression" else 3
    config = config_cls(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=num_labels, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, pad_token_id=1, max_position_embeddings=40)
    model = model_cls(config)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["query", "value"],
                                                 task_type="TOKEN_CLS" if head == "token" else "SEQ_CLS"))
    return model


def _batch(head: str, problem: str, lengths=LENGTHS) -> dict:
    g = torch.Generator().manual_seed(1)
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    batch = {"input_ids": torch.where(mask.bool(), torch.randint(5, 100, mask.shape, generator=g), 1),
             "attention_mask": mask}
    if head == "token":
        batch["labels"] = torch.where(mask.bool(), torch.randint(0, 3, mask.shape, generator=g), -100)
    elif problem == "regression":
        batch["labels"] = torch.randn(len(lengths), generator=g)
    else:
        batch["labels"] = torch.randint(0, 3, (len(lengths),), generator=g)
    return batch


def _forward_backward(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("head,problem", [("seq", "classification"), ("seq", "regression"), ("token", "classification")])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("lengths,rows", [(LENGTHS, 28), ([20, 17, 11, 3], 52)], ids=["exact", "bucketed"])
def test_same_outputs_and_gradients_dense_layers_see_real_tokens_only(family, head, problem, lora, lengths, rows):
    """28 real tokens run as 28 rows; 51 as a bucket of 52 (one filler row that must add nothing)."""
    model = _model(family, head, problem, lora)
    batch = _batch(head, problem, lengths)
    padded, padded_grads = _forward_backward(model, batch)

    seen = []
    dense = next(m for n, m in model.named_modules() if n.endswith("layer.0.intermediate.dense"))
    hook = dense.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[:-1]))
    with unpad.applied(model):
        packed, packed_grads = _forward_backward(model, batch)
    hook.remove()

    assert seen == [torch.Size([1, rows])]  # the real tokens (up to the bucket), not 4 x max(lengths) slots
    real = batch["attention_mask"].bool()
    logits, reference = (packed.logits[real], padded.logits[real]) if head == "token" else (packed.logits, padded.logits)
    torch.testing.assert_close(logits, reference)
    torch.testing.assert_close(packed.loss, padded.loss)
    assert packed_grads.keys() == padded_grads.keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, msg=name)


def test_buckets_bound_the_filler_and_the_number_of_sizes():
    sizes = {unpad.bucket(t) for t in range(1, 4097)}
    assert all(t <= unpad.bucket(t) <= t * (1 + 1 / unpad.BUCKETS_PER_OCTAVE) for t in range(1, 4097))
    per_octave = unpad.BUCKETS_PER_OCTAVE
    octaves = (4096 // (2 * per_octave)).bit_length() - 1  # from 2 * per_octave (exact below) up to 4096
    assert len(sizes) <= 2 * per_octave + per_octave * octaves  # not one size per count


def test_restores_attention_and_hooks_even_after_an_error():
    model = _model("bert", "seq", "classification", lora=False)
    with pytest.raises(RuntimeError, match="boom"):
        with unpad.applied(model):
            assert model.config._attn_implementation == unpad.NAME
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    assert not model.bert.encoder._forward_pre_hooks and not model.bert.encoder._forward_hooks


def test_disabled_and_unpadded_batches_are_untouched():
    model = _model("bert", "seq", "classification", lora=False)
    with unpad.applied(model, enabled=False):
        assert model.config._attn_implementation == "sdpa"
    batch = {"input_ids": torch.randint(5, 100, (2, 6)), "labels": torch.tensor([0, 1])}  # no padding mask at all
    reference = model(**batch).logits
    with unpad.applied(model):
        torch.testing.assert_close(model(**batch).logits, reference)


def test_non_encoder_model_is_a_value_error_of_the_kernel():
    """The kernel names no config key (ops raise ValueError); `check` says so before anything is changed."""
    with pytest.raises(ValueError, match="Linear holds no transformers model") as raised:
        with unpad.applied(torch.nn.Linear(2, 2)):
            pass
    assert not isinstance(raised.value, ConfigError)
    with pytest.raises(ValueError, match="holds no transformers model"):
        unpad.check(torch.nn.Linear(2, 2))


def test_non_encoder_model_is_a_config_error_naming_the_key():
    """The loop asked for unpadding because of trainer.unpad: the one-line error names that key."""
    with pytest.raises(ConfigError, match=r"^trainer.unpad: Linear holds no transformers model; set trainer.unpad=false"):
        with unpadded(torch.nn.Linear(2, 2), True):
            pass
    with unpadded(torch.nn.Linear(2, 2), False):  # off: nothing to check
        pass

