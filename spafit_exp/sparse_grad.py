"""Weight gradients only where a fixed mask needs them.

A fixed subset trains k elements of a Linear weight. Its dense gradient dY^T X costs in·out·T multiply-adds per
layer (T = the batch's tokens), a third of the layer's training FLOPs, yet only k of its entries are ever read.
Each selected entry is its own dot product over the tokens, grad[i, j] = sum_t dY[t, i] * X[t, j] — a sampled
dense-dense product of k·T multiply-adds. `SelectedWeightGrad` computes exactly that (the input gradient as usual)
and writes the k values into a zero gradient, so clipping, the masked optimizer and checkpoints see the same
tensors as before; the unselected entries are zero, i.e. clipping measures the norm of what trains.

Gathering columns is memory-bound, so the sampled product only pays while k is a small fraction of the weight
(`worth_it`); above that the layer keeps the dense GEMM and its gradient is masked to the selection."""

from __future__ import annotations

from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn

from spafit_exp.masking import keep_only

MAX_FRACTION = 1 / 32  # of a weight's elements: above this the dense GEMM is faster on CPU (measured, benchmarks.md)
CHUNK_ELEMENTS = 1 << 22  # tokens x selected entries gathered at once: bounds the temporary memory


def worth_it(weight: nn.Parameter, selected: int) -> bool:
    return selected <= weight.numel() * MAX_FRACTION


def sampled_weight_grad(grad_out: torch.Tensor, inputs: torch.Tensor, rows: torch.Tensor,
                        cols: torch.Tensor) -> torch.Tensor:
    """sum_t grad_out[t, rows[s]] * inputs[t, cols[s]] for every selected s, in token chunks."""
    values = torch.zeros(rows.numel(), dtype=torch.float32, device=grad_out.device)
    step = max(1, CHUNK_ELEMENTS // max(1, rows.numel()))
    for start in range(0, grad_out.shape[0], step):
        d, x = grad_out[start:start + step], inputs[start:start + step]
        values += (d[:, rows].float() * x[:, cols].float()).sum(0)
    return values


class SelectedWeightGrad(torch.autograd.Function):
    """F.linear whose weight gradient is computed at `flat_index` only (zero elsewhere)."""

    @staticmethod
    def forward(x, weight, bias, flat_index):
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, flat_index = inputs
        ctx.save_for_backward(x, weight, flat_index)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, flat_index = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ weight.to(grad_out.dtype)
        d2 = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            columns = weight.shape[1]
            values = sampled_weight_grad(d2, x.reshape(-1, columns), flat_index // columns, flat_index % columns)
            grad_w = torch.zeros_like(weight)
            grad_w.view(-1)[flat_index] = values.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = d2.sum(0).to(weight.dtype)
        return grad_x, grad_w, grad_b, None


def _forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if not (torch.is_grad_enabled() and self.weight.requires_grad):  # eval / frozen: the plain layer
        return F.linear(x, self.weight, self.bias)
    return SelectedWeightGrad.apply(x, self.weight, self.bias, self._selected_index)


def mask_gradient(param: nn.Parameter, flat_index: torch.Tensor):
    """A dense path's gradient zeroed outside the selection (what clipping and the optimizer then see), in place
    once it is accumulated: one write pass over the tensor and no second gradient-sized buffer (an embedding
    matrix's is tens of MB)."""
    return param.register_post_accumulate_grad_hook(lambda p: keep_only(p.grad, flat_index))


def install(model: nn.Module, fixed: dict[nn.Parameter, torch.Tensor]) -> int:
    """Every Linear whose weight trains a small fixed selection computes only those gradient entries; every
    other selected tensor gets its dense gradient masked. Returns how many Linear layers take the sampled path."""
    linears = {id(m.weight): m for m in model.modules() if isinstance(m, nn.Linear)}
    sampled = 0
    for param, index in fixed.items():
        layer = linears.get(id(param))
        if layer is not None and worth_it(param, index.numel()):
            layer._selected_index = index
            layer.forward = MethodType(_forward, layer)
            sampled += 1
        else:
            mask_gradient(param, index)
    return sampled
