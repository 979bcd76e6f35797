"""Per-example squared gradients, batched: sum over examples i of g_i * g_i, where g_i is the gradient of
example i's own loss (the subset paper's eq. 2, the empirical Fisher diagonal), for the candidate tensors of a
BERT-style model. One forward/backward per chunk of examples replaces one per example.

No parameter gradient is formed. Hooks keep each hooked module's input X (forward) and output gradient dY
(backward), and each example's gradient is rebuilt from them the way Opacus' grad samplers do it:

- Linear: g_i(W) = sum_t dY[i,t]^T X[i,t], g_i(b) = sum_t dY[i,t];
- LayerNorm: g_i(gamma) = sum_t dY[i,t] * xhat[i,t], g_i(beta) = sum_t dY[i,t];
- Embedding: g_i(E)[v] = sum of dY[i,t] over the tokens t with id v (summed per id before squaring; sparse).

Each example's gradient of a tensor is formed in one reused buffer and squared into the total straight away,
so the extra memory is one buffer per tensor, not chunk x all candidates. `vmap(grad)` over `functional_call`
would hold every example's full gradient (1.4 GB per 16 MiniLM examples, mostly the dense word-embedding
gradient), and transformers' mask code branches on data. A tensor that two modules use (an MLM decoder tied to
the word embeddings) has its pieces summed per example before it is squared.

Why batching keeps the exact per-example values: in eval mode examples do not interact (no dropout, no batch
statistics, padding masked as attention keys), so the gradient of sum_i loss_i at example i's activations is
the gradient of loss_i. Padding rows get dY = 0 and are also masked out explicitly. Each loss_i is the model's own
loss on example i alone (`example_losses`). An MLM model's output layer (vocab x hidden per token, its costliest
layer) runs on the labelled rows only, because the other rows reach no loss. `sq_grad_sum_loop`, one example at a
time, is the reference the tests compare against."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from spafit_exp.ops.masking import FlatParams

HOOKED = (nn.Linear, nn.LayerNorm, nn.Embedding)


def example_losses(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[batch]: each example's loss as the model computes it for that example alone. Token labels (-100 ignored):
    mean cross-entropy over the example's labelled tokens (0 if it has none); `logits` may hold only the
    labelled rows, in row-major order. Sequence labels: the loss of transformers' *ForSequenceClassification."""
    batch = labels.shape[0]
    if _token_level(labels):
        keep = labels != -100
        rows = logits[keep] if logits.dim() == 3 else logits
        ce = F.cross_entropy(rows.float(), labels[keep], reduction="none")
        sums = ce.new_zeros(batch).index_add_(0, keep.nonzero()[:, 0], ce)
        return sums / keep.sum(1).clamp_min(1)
    config = model.config
    problem = config.problem_type or ("regression" if config.num_labels == 1 else "single_label_classification"
                                      if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
    logits = logits.float().view(batch, -1)
    if problem == "regression":
        return (logits - labels.float().view(batch, -1)).square().mean(1)
    if problem == "single_label_classification":
        return F.cross_entropy(logits, labels.view(-1), reduction="none")
    return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(1)


def _token_level(labels: torch.Tensor) -> bool:
    return labels.dim() == 2 and not labels.is_floating_point()  # float [batch, labels]: multi-label targets


def length_chunks(rows: list[dict], size: int) -> list[list[dict]]:
    """`rows` in chunks of `size`, longest first: rows of similar length share a chunk, so little is padded (the
    statistic is a sum over examples, so their order does not matter)."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    return [[rows[i] for i in order[s:s + size]] for s in range(0, len(order), size)]


class _Hooks:
    """Hooks on the modules that own candidate tensors, and the state of the chunk being processed."""

    def __init__(self, model: nn.Module, flat: FlatParams, total: torch.Tensor):
        by_name = dict(model.named_parameters())
        views = {id(by_name[n]): v for n, v in zip(flat.names, flat.views(total)) if n in by_name}
        self.views, self.roles, users = views, defaultdict(list), defaultdict(int)
        for module in model.modules():
            for role, p in module._parameters.items():
                if p is None or id(p) not in views:
                    continue
                if not isinstance(module, HOOKED) or role not in ("weight", "bias"):
                    raise ValueError(f"per-example gradients: no rule for {type(module).__name__}.{role}")
                self.roles[module].append((role, id(p)))
                users[id(p)] += 1
        self.shared = {pid for pid, n in users.items() if n > 1}
        self.handles = []
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                self.handles.append(module.register_forward_pre_hook(self._per_example_ids))
            if isinstance(module, nn.Embedding) or module in self.roles:
                self.handles.append(module.register_forward_hook(self._forward))
        self.batch, self.mask, self.rows, self.called, self.stash = 0, None, {}, set(), defaultdict(list)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _per_example_ids(self, module, args):
        # BERT looks positions up once ([1, length]) and broadcasts the result: its gradient would arrive summed
        # over the batch. One row of ids per example keeps each example's own.
        ids = args[0]
        if self.batch > 1 and ids.dim() == 2 and ids.shape[0] == 1:
            return (ids.expand(self.batch, -1), *args[1:])
        return None

    def _forward(self, module, args, output):
        if isinstance(module, nn.Embedding) and not output.requires_grad:
            output.requires_grad_()  # no parameter requires grad (no weight gradient is formed): start the graph here
        if module in self.roles:
            if module in self.called:  # its pieces would be squared apart instead of summed first
                raise RuntimeError(f"per-example gradients: {type(module).__name__} runs twice in one forward")
            self.called.add(module)
            x = args[0].detach()
            output.register_hook(lambda dy: self._backward(module, x, dy))

    def _backward(self, module, x, dy) -> None:
        x, dy = self._padded(module, x, dy)
        for role, pid in self.roles[module]:
            piece = _piece(module, role, x, dy)
            if pid in self.shared:
                self.stash[pid].append(piece)
            else:
                _add_squares(self.views[pid], piece)

    def _padded(self, module, x, dy):
        """x, dy as [batch, rows, ...] with dy = 0 on rows that are not the example's (padding)."""
        if module in self.rows:  # the output layer ran on labelled rows only: regroup them per example
            counts = torch.bincount(self.rows[module], minlength=self.batch).tolist()
            return (nn.utils.rnn.pad_sequence(x.split(counts), batch_first=True),
                    nn.utils.rnn.pad_sequence(dy.split(counts), batch_first=True))
        if dy.dim() == 2 and dy.shape[0] == self.batch:  # one row per example (the pooler)
            return x.unsqueeze(1), dy.unsqueeze(1)
        if dy.dim() == 3 and dy.shape[:2] == self.mask.shape:
            return x, dy * self.mask[..., None]
        raise RuntimeError(f"per-example gradients: cannot tell the examples apart in {type(module).__name__}'s "
                           f"output of shape {tuple(dy.shape)} (batch {self.batch})")

    def flush(self) -> None:
        """Tensors used by several modules: per example, sum the pieces, then square."""
        for pid, pieces in self.stash.items():
            total = self.views[pid]
            g = torch.empty_like(total)
            pieces = sorted(pieces, key=lambda piece: piece[0] != "outer")  # a dense product first: it sets g
            for i in range(self.batch):
                if pieces[0][0] == "outer":
                    torch.mm(pieces[0][1][i].T, pieces[0][2][i], out=g)
                else:
                    _add_example(g.zero_(), pieces[0], i)
                for piece in pieces[1:]:
                    _add_example(g, piece, i)
                total.addcmul_(g, g)
        self.stash.clear()


def _piece(module: nn.Module, role: str, x: torch.Tensor, dy: torch.Tensor) -> tuple:
    """The per-example gradient of one tensor, unreduced: ("scatter", ids, dy), ("sum", v) or ("outer", dy, x)."""
    if isinstance(module, nn.Embedding):
        return ("scatter", x, dy)
    if role == "bias":
        return ("sum", dy)
    if isinstance(module, nn.LayerNorm):
        return ("sum", dy * F.layer_norm(x, module.normalized_shape, eps=module.eps))
    return ("outer", dy, x)


def _add_squares(total: torch.Tensor, piece: tuple) -> None:
    """total += sum over the chunk's examples of their gradient squared."""
    form = piece[0]
    if form == "sum":
        total.add_(piece[1].sum(1).square().sum(0))
    elif form == "outer":
        # One example at a time into one buffer: g and `total` stay in cache, where a [chunk, out, in] tensor
        # would go through memory three times (write, square, reduce) and dominate the cost.
        dy, x = piece[1].transpose(1, 2), piece[2]
        g = torch.empty_like(total)
        for i in range(dy.shape[0]):
            torch.mm(dy[i], x[i], out=g)
            total.addcmul_(g, g)
    else:
        ids, dy = piece[1], piece[2]
        vocab = total.shape[0]
        keys = (torch.arange(ids.shape[0], device=ids.device)[:, None] * vocab + ids).reshape(-1)
        keys, inverse = keys.unique(return_inverse=True)  # (example, token id) pairs
        rows = dy.new_zeros(keys.numel(), dy.shape[-1]).index_add_(0, inverse, dy.reshape(-1, dy.shape[-1]))
        total.index_add_(0, keys % vocab, rows.square_())


def _add_example(g: torch.Tensor, piece: tuple, i: int) -> None:
    """g += example i's gradient from `piece`."""
    form = piece[0]
    if form == "sum":
        g.add_(piece[1][i].sum(0))
    elif form == "outer":
        g.addmm_(piece[1][i].T, piece[2][i])
    else:
        g.index_add_(0, piece[1][i], piece[2][i])


def sq_grad_sum(model: nn.Module, flat: FlatParams, batches: Iterable[dict], desc: str | None = None,
                examples: int | None = None) -> torch.Tensor:
    """Sum over every example of `batches` (padded batches with labels) of its squared loss gradient, per
    candidate element (`flat.names`, looked up in `model` by name: a tensor `model` lacks gets 0). Eval mode;
    `model` is left as it was. `examples` sizes the progress bar."""
    total = torch.zeros(flat.n, dtype=torch.float32, device=flat.params[0].device)
    saved = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval().requires_grad_(False)
    hooks = None
    try:
        hooks = _Hooks(model, flat, total)
        with tqdm(total=examples, desc=desc, unit="ex", leave=False, dynamic_ncols=True) as bar:
            for batch in batches:
                _chunk(model, hooks, batch)
                bar.update(batch["labels"].shape[0])
    finally:
        if hooks is not None:
            hooks.remove()
        model.train(was_training)
        for p, flag in saved:
            p.requires_grad_(flag)
    return total


def _chunk(model: nn.Module, hooks: _Hooks, batch: dict) -> None:
    inputs = dict(batch)
    labels = inputs.pop("labels")
    hooks.batch = labels.shape[0]
    hooks.mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])).float()
    output_layer = model.get_output_embeddings() if _token_level(labels) else None
    handle = None
    if output_layer is not None:  # MLM: the vocabulary projection only where a loss is taken
        keep = labels != -100
        hooks.rows = {output_layer: keep.nonzero()[:, 0]}
        handle = output_layer.register_forward_pre_hook(lambda module, args: (args[0][keep], *args[1:]))
    try:
        logits = model(**inputs).logits
    finally:
        if handle is not None:
            handle.remove()
    losses = example_losses(model, logits, labels)
    if losses.requires_grad:  # else no example of the chunk has a labelled token: nothing to add
        losses.sum().backward()
    hooks.flush()
    hooks.rows, hooks.called = {}, set()


def single_examples(batch: dict) -> list[dict]:
    """A right-padded batch as batches of one example each, padding removed."""
    size = batch["input_ids"].shape[0]
    mask = batch.get("attention_mask")
    lengths = mask.sum(1).tolist() if mask is not None else [batch["input_ids"].shape[1]] * size
    width = batch["input_ids"].shape[1]
    return [{k: v[i:i + 1, :n] if v.dim() == 2 and v.shape[1] == width and (k != "labels" or _token_level(v))
             else v[i:i + 1] for k, v in batch.items()} for i, n in enumerate(lengths)]


def sq_grad_sum_loop(model: nn.Module, flat: FlatParams, batches: Iterable[dict]) -> torch.Tensor:
    """The reference: per batch, the squared gradient of its loss, summed (eval mode). With batches of one example
    (`single_examples`) this is the per-example statistic, one forward/backward per example."""
    by_name = dict(model.named_parameters())
    params = [by_name.get(n) for n in flat.names]
    requires = {n: p.requires_grad for n, p in by_name.items()}
    for p in params:
        if p is not None:
            p.requires_grad_(True)
    total = torch.zeros(flat.n, dtype=torch.float32, device=flat.params[0].device)
    views = flat.views(total)
    was_training = model.training
    model.eval()
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        with torch.no_grad():
            for view, p in zip(views, params):
                if p is not None and p.grad is not None:
                    view.addcmul_(p.grad, p.grad)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    for n, p in by_name.items():
        p.requires_grad_(requires[n])
    return total
