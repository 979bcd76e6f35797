"""Gradients only where a fixed mask needs them.

A fixed subset trains k elements of the encoder. A Linear weight's dense gradient dY^T X costs in·out·T
multiply-adds per layer (T = the batch's tokens), a third of the layer's training FLOPs, and a dense gradient
buffer per weight (the word embeddings' alone is 47 MB) that clipping and the optimizer then read in full — yet
only k entries are ever used. `install` therefore re-parametrises each selected Linear and Embedding weight:

- the weight itself is frozen; its k selected entries become a parameter of their own, `<module>.weight_selected`
  (k values), which is what the optimizer, clipping and checkpoints see;
- the forward reads the weight alone; the weight holds the values after every optimizer step and after a resume
  (`keep_in_sync`: a k-element write), so evaluation, checkpoints and export read the trained model;
- a selected entry's gradient is its own dot product over the tokens, grad[i, j] = sum_t dY[t, i] * X[t, j] (a
  sampled dense-dense product of k·T multiply-adds), the input gradient is computed as usual; an embedding entry's
  is the sum of the output gradient over the batch's tokens of its row (none for the padding row).

Values, moments and weight decay are those of the masked dense path (`weight_grad=dense`, kept as the reference):
the same k numbers, the unselected gradients were zero there (equal to float rounding in fp32; under bf16 autocast
the sampled product reads the fp32 input where the dense GEMM reads its bf16 copy, ~1e-3 relative). Gathering
columns is memory-bound, so a Linear takes the sampled product only while k is a small fraction of its weight
(`worth_it`); above that, and for every other selected tensor (LayerNorm, biases), the dense gradient is masked to
the selection in place."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn

from spafit_exp.ops.masking import keep_only
from spafit_exp.ops.params import SELECTED_VALUES

MAX_FRACTION = 1 / 32  # of a weight's elements: above this the dense GEMM is faster on CPU (measured, benchmarks.md)
CHUNK_ELEMENTS = 1 << 22  # tokens x selected entries gathered at once: bounds the temporary memory
INDEX = SELECTED_VALUES + "_index"  # their flat indices into the weight (a buffer: it follows the module's device)


def worth_it(weight: nn.Parameter, selected: int) -> bool:
    return selected <= weight.numel() * MAX_FRACTION


def sampled_weight_grad(grad_out: torch.Tensor, inputs: torch.Tensor, rows: torch.Tensor,
                        cols: torch.Tensor) -> torch.Tensor:
    """sum_t grad_out[t, rows[s]] * inputs[t, cols[s]] for every selected s, in token chunks."""
    step = max(1, CHUNK_ELEMENTS // max(1, rows.numel()))
    values = None
    for start in range(0, grad_out.shape[0], step):
        d, x = grad_out[start:start + step], inputs[start:start + step]
        # index_select gathers columns ~2.5x faster than advanced indexing on CPU (measured, [224, 384] x 590)
        part = (d.index_select(1, rows).float() * x.index_select(1, cols).float()).sum(0)
        values = part if values is None else values.add_(part)
    return values if values is not None else grad_out.new_zeros(rows.numel(), dtype=torch.float32)


class SelectedLinear(torch.autograd.Function):
    """F.linear(x, weight, bias) whose gradient for `weight.view(-1)[flat_index]` goes to `values`."""

    @staticmethod
    def forward(x, weight, bias, values, flat_index):
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, values, flat_index = inputs
        ctx.save_for_backward(x, weight, flat_index)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, flat_index = ctx.saved_tensors
        grad_x = grad_b = grad_values = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ weight.to(grad_out.dtype)
        d2 = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[3]:
            columns = weight.shape[1]
            grad_values = sampled_weight_grad(d2, x.reshape(-1, columns), flat_index // columns,
                                              flat_index % columns).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = d2.sum(0).to(weight.dtype)
        return grad_x, None, grad_b, grad_values, None


class SelectedEmbedding(torch.autograd.Function):
    """F.embedding(ids, weight) whose gradient for `weight.view(-1)[flat_index]` goes to `values`."""

    @staticmethod
    def forward(ids, weight, values, flat_index, padding_idx):
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ids, weight, values, flat_index, padding_idx = inputs
        ctx.save_for_backward(ids, flat_index)
        ctx.width, ctx.padding_idx = weight.shape[1], padding_idx

    @staticmethod
    def backward(ctx, grad_out):
        ids, flat_index = ctx.saved_tensors
        if ids.numel() == 0:
            return None, None, grad_out.new_zeros(flat_index.numel()), None, None
        rows, cols = flat_index // ctx.width, flat_index % ctx.width
        batch_rows, inverse = torch.unique(ids.reshape(-1), return_inverse=True)  # sorted
        sums = grad_out.new_zeros(batch_rows.numel(), ctx.width).index_add_(0, inverse,
                                                                             grad_out.reshape(-1, ctx.width))
        where = torch.searchsorted(batch_rows, rows).clamp_(max=batch_rows.numel() - 1)
        present = batch_rows[where] == rows
        if ctx.padding_idx is not None:  # the padding row gets no gradient (nn.Embedding's rule)
            present &= rows != ctx.padding_idx
        grad_values = torch.where(present, sums[where, cols], torch.zeros((), dtype=sums.dtype))
        return None, None, grad_values, None, None


@torch.no_grad()
def _write_values(module: nn.Module) -> None:
    module.weight.view(-1)[getattr(module, INDEX)] = getattr(module, SELECTED_VALUES).to(module.weight.dtype)


def _training(module: nn.Module) -> bool:
    return torch.is_grad_enabled() and getattr(module, SELECTED_VALUES).requires_grad


def _linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if not _training(self):  # evaluation: the plain layer on the up-to-date weight
        return F.linear(x, self.weight, self.bias)
    return SelectedLinear.apply(x, self.weight, self.bias, getattr(self, SELECTED_VALUES), getattr(self, INDEX))


def _embedding_forward(self: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    if not _training(self):
        return type(self).forward(self, ids)
    return SelectedEmbedding.apply(ids, self.weight, getattr(self, SELECTED_VALUES), getattr(self, INDEX), self.padding_idx)


def sync(model: nn.Module) -> None:
    """Write every selected weight's trained values into it: after each optimizer step, and after a resume
    restored the values (`keep_in_sync`)."""
    for module in model.modules():
        if hasattr(module, SELECTED_VALUES):
            _write_values(module)


@torch.no_grad()
def read_back(model: nn.Module) -> None:
    """The other direction: every selected parameter re-read from its weight, after the weights were written
    directly (a reloaded run, the best epoch's tensors swapped in), so both hold the same values."""
    for module in model.modules():
        if hasattr(module, SELECTED_VALUES):
            getattr(module, SELECTED_VALUES).copy_(module.weight.view(-1)[getattr(module, INDEX)])


def keep_in_sync(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    """The weights hold their selected values after every step of `optimizer` and after its state is loaded (a
    resume loads the trained tensors, then the optimizer). The forward reads the weight alone, so a model whose
    weights were written directly (a reloaded run) evaluates as written."""
    optimizer.register_step_post_hook(lambda *_: sync(model))
    optimizer.register_load_state_dict_post_hook(lambda *_: sync(model))
    return optimizer


def selections(model: nn.Module) -> dict[nn.Parameter, torch.Tensor]:
    """The re-parametrised weights and the flat indices their values train."""
    return {m.weight: getattr(m, INDEX) for m in model.modules() if hasattr(m, SELECTED_VALUES)}


def mask_gradient(param: nn.Parameter, flat_index: torch.Tensor):
    """A dense path's gradient zeroed outside the selection (what clipping and the optimizer then see), in place
    once it is accumulated: one write pass over the tensor and no second gradient-sized buffer."""
    return param.register_post_accumulate_grad_hook(lambda p: keep_only(p.grad, flat_index))


def _select(module: nn.Module, index: torch.Tensor, forward) -> None:
    module.weight.requires_grad_(False)
    module.register_parameter(SELECTED_VALUES, nn.Parameter(module.weight.detach().view(-1)[index].clone()))
    module.register_buffer(INDEX, index, persistent=False)
    module.forward = MethodType(forward, module)


@dataclass
class Installed:
    masked: dict[nn.Parameter, torch.Tensor] = field(default_factory=dict)  # dense gradients masked to these
    linears: int = 0  # Linear layers re-parametrised
    embeddings: int = 0  # Embedding layers re-parametrised


def install(model: nn.Module, fixed: dict[nn.Parameter, torch.Tensor]) -> Installed:
    """Re-parametrise every selected Embedding weight and every Linear weight with a small selection as described
    above; mask every other selected tensor's dense gradient."""
    owners = {id(m.weight): m for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))
              and isinstance(getattr(m, "weight", None), nn.Parameter)}
    installed = Installed()
    for param, index in fixed.items():
        module = owners.get(id(param))
        if isinstance(module, nn.Linear) and worth_it(param, index.numel()):
            _select(module, index, _linear_forward)
            installed.linears += 1
        elif isinstance(module, nn.Embedding) and module.max_norm is None:  # max_norm rewrites rows in place
            _select(module, index, _embedding_forward)
            installed.embeddings += 1
        else:
            mask_gradient(param, index)
            installed.masked[param] = index
    return installed
