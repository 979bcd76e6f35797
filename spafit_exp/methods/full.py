"""Full fine-tuning: every parameter trains (the baseline every paper compares against)."""

from spafit_exp.methods import Prepared, register


@register("full_ft")
def full_ft(model, options) -> Prepared:
    for p in model.parameters():
        p.requires_grad_(True)
    return Prepared(model)
