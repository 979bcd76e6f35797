"""Whole-module subsets (Stochastic Tuning paper's baselines): `frozen` trains only the task head (BERT: pooler +
classifier, RoBERTa: its classification head); `multi_head` trains
the attention modules of every layer (query, key, value and the attention output projection) plus the head."""

import re
from dataclasses import dataclass

from omegaconf import MISSING

from spafit_exp.methods import Method, MethodOptions, register
from spafit_exp.ops.params import freeze_all, is_head, unfreeze

_ATTENTION = re.compile(r"\.layer\.\d+\.attention\.(self\.(query|key|value)|output\.dense)\.")
_ATTENTION_LN = re.compile(r"\.layer\.\d+\.attention\.output\.LayerNorm\.")


@register("frozen")
def frozen(model, options) -> Method:
    """The paper's Frozen trains RoBERTa's classification head (dense + tanh + projection). BERT-family models
    keep the dense + tanh part in the backbone as the pooler, so it trains here too: the same head on both."""
    freeze_all(model)
    unfreeze(model, lambda n: is_head(n) or ".pooler." in n)
    return Method(model)


@dataclass
class MultiHeadOptions(MethodOptions):
    include_layernorm: bool = MISSING


@register("multi_head", options=MultiHeadOptions)
def multi_head(model, options: MultiHeadOptions) -> Method:
    """`method.include_layernorm=true` also trains the attention block's LayerNorm (off by default: the
    multi-head attention module proper is the four projections)."""
    freeze_all(model)
    with_ln = options.include_layernorm
    unfreeze(model, lambda n: is_head(n) or bool(_ATTENTION.search(n)) or (with_ln and bool(_ATTENTION_LN.search(n))))
    return Method(model)
