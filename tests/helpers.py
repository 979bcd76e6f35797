"""Tiny random models and a few-step trainer for method tests: which tensors change, and which do not."""

import torch
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

ARCH = dict(num_hidden_layers=4, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=100,
            max_position_embeddings=40)


def tiny_model(family: str = "bert", num_labels: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    if family == "bert":
        return BertForSequenceClassification(BertConfig(**ARCH, num_labels=num_labels))
    return RobertaForSequenceClassification(RobertaConfig(**ARCH, num_labels=num_labels, pad_token_id=1))


def snapshot(model) -> dict[str, torch.Tensor]:
    """Base-model tensors by canonical name (peft's `.base_layer` removed) so snapshots before and after match."""
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def train_steps(prepared, steps: int = 3, lr: float = 1e-2, seed: int = 0) -> None:
    """A few AdamW steps (no weight decay) on random batches, calling the method hook like the loop does."""
    model = prepared.model
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        ids = torch.randint(3, 100, (4, 12), generator=g)
        labels = torch.randint(0, 2, (4,), generator=g)
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        prepared.before_step()
        opt.step()
        opt.zero_grad(set_to_none=True)


def changed(before: dict, after: dict) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


def data_and_task(cfg):
    """The data and task specs of a composed config: what the file readers take."""
    from spafit_exp.run.spec import resolve

    spec = resolve(cfg)
    return spec.data, spec.task
