"""Full BitFit (SPAFIT paper's baseline): every bias of the encoder plus the embeddings' LayerNorm bias, and the
classification head. Pooler and embedding matrices stay frozen.

The SPAFIT paper prints 31.52M parameters for Full BitFit on BERT-large, which no bias-only reading reproduces
(all biases of BERT-large are ~0.27M); we implement BitFit as defined by Ben Zaken et al. and document the gap."""

from spafit_exp.methods import Prepared, register
from spafit_exp.params import freeze_all, is_bias, is_head, layer_of, unfreeze


def is_bitfit_param(name: str) -> bool:
    """Encoder biases (LayerNorm biases included) and the embeddings' LayerNorm bias; never the pooler."""
    if not is_bias(name) or ".pooler." in name:
        return False
    return layer_of(name) is not None or ".embeddings.LayerNorm." in name


@register("full_bitfit")
def full_bitfit(model, cfg) -> Prepared:
    freeze_all(model)
    unfreeze(model, lambda n: is_bitfit_param(n) or is_head(n))
    return Prepared(model)
