"""Full fine-tuning: every parameter trains (the baseline every paper compares against)."""

from spafit_exp.methods import Method, register


@register("full_ft")
def full_ft(model, options) -> Method:
    for p in model.parameters():
        p.requires_grad_(True)
    return Method(model)
