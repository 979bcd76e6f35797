"""`selector=magnitude`: the k candidate elements of largest pre-trained magnitude |theta0| — a data-free
baseline next to the gradient statistics (and the README's worked example of adding a selector)."""

from spafit_exp.methods import Selection
from spafit_exp.ops.sampling import topk_indices
from spafit_exp.selection.selectors import Context, register


@register("magnitude")
def magnitude(ctx: Context) -> Selection:
    scores = ctx.flat.buffer()
    for view, p in zip(ctx.flat.views(scores), ctx.flat.params):
        view.copy_(p.detach().abs())
    return ctx.picked(topk_indices(scores, ctx.k))
