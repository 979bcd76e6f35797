"""Memory stays flat over a run: with the unpadded encoder the packed token count changes every step, and without
bucketed sizes glibc's heap fragments until RSS grows with the number of steps. A BERT of the embedded model's
width trains a few hundred steps on batches of random lengths; RSS after warm-up must not keep growing."""

import psutil
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from spafit_exp.ops import unpad


def rss_growth_mb(steps: int = 200, warmup: int = 40, seed: int = 0) -> float:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=1000, hidden_size=384, num_hidden_layers=2, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=130)
    model = BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(seed)
    process = psutil.Process()
    after_warmup = None
    with unpad.applied(model):
        for step in range(steps):
            lengths = torch.randint(8, 96, (8,), generator=g)
            width = int(lengths.max())
            mask = (torch.arange(width)[None] < lengths[:, None]).long()
            ids = torch.randint(5, 1000, (8, width), generator=g) * mask
            loss = model(input_ids=ids, attention_mask=mask, labels=torch.randint(0, 2, (8,), generator=g)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step == warmup:
                after_warmup = process.memory_info().rss
    return (process.memory_info().rss - after_warmup) / 2**20


def test_rss_does_not_keep_growing():
    growth = rss_growth_mb()
    assert growth < 40, f"RSS grew {growth:.0f} MB after warm-up"


@pytest.mark.slow
def test_exact_packed_sizes_grow(monkeypatch):
    """The control: with one packed size per token count (the code before buckets) the same loop grows."""
    monkeypatch.setattr(unpad, "bucket", lambda tokens: tokens)
    assert rss_growth_mb() > 40
