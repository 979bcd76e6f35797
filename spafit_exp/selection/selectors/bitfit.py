"""`selector=bitfit`: BitFit's elements (every encoder bias and the embeddings' LayerNorm bias) as a fixed subset;
its size is what every other selector picks by default, so the subsets of one table are the same size."""

from spafit_exp.methods import Selection
from spafit_exp.ops.masking import bitfit_indices
from spafit_exp.selection.selectors import Context, register


@register("bitfit")
def bitfit_subset(ctx: Context) -> Selection:
    index = bitfit_indices(ctx.flat)
    return ctx.picked(index, info={"k": int(index.numel())})
