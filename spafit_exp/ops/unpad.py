"""Unpadded encoder: the dense layers of every transformer block run on the real tokens only.

With dynamic padding a batch is as long as its longest row; on SST-2 only ~37% of a batch's token slots hold
real tokens, yet every slot goes through every Linear, LayerNorm and GELU. Attention is the one op that mixes
tokens, so only it needs the padded layout. `applied(model)`:

- packs the embeddings' output [B, L, H] into the real tokens [1, T, H] before the encoder (a forward pre-hook),
- runs each self-attention on a padded view rebuilt from the packed q/k/v (the "spafit_unpadded" attention
  function, registered with transformers' AttentionInterface, SDPA with the key-padding mask),
- scatters the encoder's output back to [B, L, H] (zeros at padding), so pooler, heads and losses run unchanged.

The packed token count is rounded up to a bucket (BUCKETS_PER_OCTAVE sizes per power of two, at most 1/8
extra rows): the extra rows repeat a real token, go through the dense layers and are never read back, so they
reach no loss and add exactly zero to every gradient. Without buckets every step allocates activations of a new
size, glibc's heap fragments under thousands of distinct sizes and the process's RSS grows with the number of
steps; with 8 sizes per octave the allocator reuses its blocks and memory stays flat (16 per octave still let RTE's
peak grow ~17% from 480 to 2,490 rows, 8 per octave ~8%, at the same speed: docs/benchmarks.md).

The maths at every real token is the same as the padded model's (padding never reaches a loss: attention masks it
as a key, and its own outputs are dropped), so gradients are equal up to float summation order; dropout draws
different random numbers because there are fewer activations. The cost is one host sync per forward (the token
count), as in flash-attention's varlen path. `trainer.unpad=false` turns it off."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface

NAME = "spafit_unpadded"
BUCKETS_PER_OCTAVE = 8


def bucket(tokens: int) -> int:
    """The packed row count for `tokens` real tokens: the next of BUCKETS_PER_OCTAVE sizes per power of two
    (exact below 2 * BUCKETS_PER_OCTAVE)."""
    if tokens <= 2 * BUCKETS_PER_OCTAVE:
        return tokens
    step = (1 << (tokens.bit_length() - 1)) // BUCKETS_PER_OCTAVE
    return -(-tokens // step) * step


@dataclass
class Packing:
    """Where the real tokens of a padded [batch, length] layout are (flat indices into batch*length), and the
    rows of the packed layout: the real tokens, then filler rows up to the bucket size."""

    indices: torch.Tensor  # [real tokens]
    rows: torch.Tensor  # [bucket]: `indices`, then copies of the first real token (filler, never read back)
    key_mask: torch.Tensor  # [batch, 1, 1, length], True at real tokens
    batch: int
    length: int

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, length, ...] -> [bucket rows, ...]"""
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.rows)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[bucket rows, ...] -> [batch, length, ...], zeros at padding; filler rows are dropped."""
        real = x[: self.indices.numel()]
        full = x.new_zeros(self.batch * self.length, *x.shape[1:]).index_copy(0, self.indices, real)
        return full.view(self.batch, self.length, *x.shape[1:])


def _packing(batch_size: int, q_length: int, kv_length: int, attention_mask=None, **_) -> Packing | None:
    """Our "mask": transformers calls this with the 2D padding mask where it would build a 4D attention mask."""
    if attention_mask is None:  # no padding mask given: every token is real, run the plain layout
        return None
    indices = attention_mask.reshape(-1).nonzero().squeeze(1)
    filler = bucket(indices.numel()) - indices.numel()
    rows = torch.cat([indices, indices[:1].expand(filler)]) if filler else indices
    return Packing(indices, rows, attention_mask[:, None, None, :], batch_size, kv_length)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """q, k, v arrive packed as [1, heads, T, head_dim]; attention runs per row on the padded view."""
    packing = attention_mask
    if not isinstance(packing, Packing):
        return sdpa_attention_forward(module, query, key, value, packing, scaling=scaling, dropout=dropout, **kwargs)

    def padded(x):  # [1, heads, T, d] -> [B, heads, L, d]
        return packing.unpack(x[0].transpose(0, 1)).transpose(1, 2)

    out = F.scaled_dot_product_attention(padded(query), padded(key), padded(value), attn_mask=packing.key_mask,
                                         dropout_p=dropout, scale=scaling)
    return packing.pack(out.transpose(1, 2)).unsqueeze(0), None  # [1, T, heads, d], as attention functions return


AttentionInterface.register(NAME, _attention)
AttentionMaskInterface.register(NAME, _packing)


def _pack_encoder_input(module, args, kwargs):
    packing = kwargs.get("attention_mask")
    if isinstance(packing, Packing):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        return (packing.pack(hidden).unsqueeze(0), *args[1:]), kwargs
    return None


def _unpack_encoder_output(module, args, kwargs, output):
    packing = kwargs.get("attention_mask")
    if isinstance(packing, Packing):
        output.last_hidden_state = packing.unpack(output.last_hidden_state[0])
    return output


def _hf_model(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model inside peft / accelerate wrappers."""
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise ValueError(f"{type(model).__name__} holds no transformers model")


def _encoder(hf: PreTrainedModel) -> torch.nn.Module:
    backbone = hf.base_model
    encoder = getattr(backbone, "encoder", None)
    if encoder is None or not hasattr(backbone, "embeddings") or hf.config.is_decoder or not hf._can_set_attn_implementation():
        raise ValueError(f"{type(hf).__name__} is not a BERT-style encoder (embeddings + encoder, AttentionInterface)")
    return encoder


def check(model: torch.nn.Module) -> None:
    """ValueError when `applied` cannot unpad `model` (no transformers model inside, or not a BERT-style encoder):
    callers check first and name the setting that asked for it."""
    _encoder(_hf_model(model))


@contextmanager
def applied(model: torch.nn.Module, enabled: bool = True):
    """Run `model` unpadded inside the block; hooks and the attention implementation are restored on exit.
    ValueError (on entry) for a model it cannot unpad (`check`)."""
    if not enabled:
        yield model
        return
    hf = _hf_model(model)
    encoder = _encoder(hf)
    previous = hf.config._attn_implementation
    hf.set_attn_implementation(NAME)
    handles = [encoder.register_forward_pre_hook(_pack_encoder_input, with_kwargs=True),
               encoder.register_forward_hook(_unpack_encoder_output, with_kwargs=True)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
        hf.set_attn_implementation(previous)
