"""Full BitFit (SPAFIT paper's baseline): every bias of the encoder plus the embeddings' LayerNorm bias, and the
classification head. Pooler and embedding matrices stay frozen.

The SPAFIT paper prints 31.52M parameters for Full BitFit on BERT-large, which no bias-only reading reproduces
(all biases of BERT-large are ~0.27M); we implement BitFit as defined by Ben Zaken et al. and document the gap."""

from spafit_exp.methods import Prepared, register
from spafit_exp.params import freeze_all, is_bitfit_param, is_head, unfreeze


@register("full_bitfit")
def full_bitfit(model, cfg) -> Prepared:
    freeze_all(model)
    unfreeze(model, lambda n: is_bitfit_param(n) or is_head(n))
    return Prepared(model)
