"""Full BitFit (SPAFIT paper's baseline): every bias of the encoder plus the embeddings' LayerNorm bias, BERT's
pooler bias, and the classification head; weight matrices and embeddings stay frozen.

The pooler bias follows BitFit's reference code (benzakenelad/BitFit, glue_evaluator.py
`_deactivate_relevant_gradients`: the chosen bias terms + 'pooler.dense.bias' + 'classifier'); RoBERTa's
classification model has no pooler (its dense + tanh live in the classifier, which trains anyway).

The SPAFIT paper prints 31.52M parameters for Full BitFit on BERT-large, which no bias-only reading reproduces
(all biases of BERT-large are ~0.27M); we implement BitFit as its authors' code does and document the gap."""

from spafit_exp.methods import Method, register
from spafit_exp.ops.params import freeze_all, is_bitfit_param, is_head, unfreeze


def trains_in_bitfit(name: str) -> bool:
    return is_bitfit_param(name) or name.endswith("pooler.dense.bias") or is_head(name)


@register("full_bitfit")
def full_bitfit(model, options) -> Method:
    freeze_all(model)
    unfreeze(model, trains_in_bitfit)
    return Method(model)
