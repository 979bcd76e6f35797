"""Task heads (`model.head`).

- `default`: transformers' own head. BERT: pooler (dense + tanh) -> dropout -> Linear; RoBERTa: dropout -> dense
  -> tanh -> dropout -> projection (592,130 parameters on RoBERTa-base with 2 labels).
- `linear`: the head of the subset paper, which fine-tunes with Flair's defaults: TransformerDocumentEmbeddings
  (cls_pooling="cls": the first token's last-layer state, read from the hidden states, so no pooler) feeding
  DefaultClassifier, whose decoder is one Linear (Xavier-uniform weight) with no dropout of its own (dropout=0.0)
  (flairNLP/flair: flair/nn/model.py DefaultClassifier, flair/embeddings/transformer.py). 1,538 parameters on
  RoBERTa-base with 2 labels: the comparison of a 102,144-element subset is not padded with 0.6M parameters that
  every variant trains alike.

Token tasks keep transformers' token head under both: it already is one Linear per token (Flair's tagger adds
dropouts of its own before its Linear, which we do not reproduce). The encoder's own dropout is the model's either way.
"""

from __future__ import annotations

from torch import nn

from spafit_exp.core.errors import ConfigError
from spafit_exp.core.spec import ModelSpec

HEADS = ("default", "linear")


def head_of(model: ModelSpec) -> str:
    """`model.head`; records written before the key existed (None) trained transformers' head."""
    return model.head or "default"


class FirstToken(nn.Module):
    """In BERT's pooler slot under the linear head: the first token's last-layer state, as it is."""

    def forward(self, hidden_states):
        return hidden_states[:, 0]


def _first_token(module, args):
    return (args[0][:, 0], *args[1:])


class FirstTokenLinear(nn.Linear):
    """In RoBERTa's classifier slot, which receives the whole sequence: one Linear on the first token. The token
    is picked in a forward pre-hook, not in `forward`, so a method that re-implements a Linear's forward (DPS_Mix's
    mixed weight) still sees only the first token."""

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None):
        super().__init__(in_features, out_features, device=device, dtype=dtype)
        self.register_forward_pre_hook(_first_token)


def _flair_decoder(cls, model: nn.Module) -> nn.Linear:
    ref = next(model.parameters())
    decoder = cls(model.config.hidden_size, model.config.num_labels, device=ref.device, dtype=ref.dtype)
    nn.init.xavier_uniform_(decoder.weight)  # Flair's decoder init; the bias keeps torch's default
    return decoder


def with_head(model: nn.Module, head: str, task_type: str) -> nn.Module:
    """`model` (a transformers *ForSequenceClassification / *ForTokenClassification) with the `head` named;
    the head's tensors stay named `classifier.*` (params.is_head)."""
    if head not in HEADS:
        raise ConfigError(f"model.head={head}: must be one of {', '.join(HEADS)}")
    if head == "default" or task_type == "token_classification":
        return model
    classifier = getattr(model, "classifier", None)
    backbone = model.base_model
    if getattr(backbone, "pooler", None) is not None and isinstance(classifier, nn.Linear):  # BERT-style
        backbone.pooler = FirstToken()
        model.dropout = nn.Identity()
        model.classifier = _flair_decoder(nn.Linear, model)
    elif hasattr(classifier, "out_proj"):  # RoBERTa-style: the classifier takes the sequence
        model.classifier = _flair_decoder(FirstTokenLinear, model)
    else:
        raise ConfigError(f"model.head={head}: {type(model).__name__} has neither BERT's pooler + classifier nor "
                          "RoBERTa's classification head; use model.head=default")
    return model
