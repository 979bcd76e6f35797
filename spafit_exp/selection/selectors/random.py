"""`selector=random`: k candidate elements uniformly at random, seeded by trainer.seed."""

import torch

from spafit_exp.methods import Selection
from spafit_exp.ops.sampling import uniform_indices
from spafit_exp.selection.selectors import Context, register


@register("random")
def random_subset(ctx: Context) -> Selection:
    generator = torch.Generator().manual_seed(int(ctx.spec.trainer.seed))
    return ctx.picked(uniform_indices(ctx.flat.n, ctx.k, generator))
