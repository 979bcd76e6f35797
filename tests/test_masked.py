"""Masked-gradient family: exactly k candidate elements (and the head) change per step with masked_step;
unselected gradients are zero with masked_grad; top-k picks the largest importance; fixed-module baselines."""

import re

import pytest
import torch
from omegaconf import OmegaConf

from spafit_exp.methods import apply_method, method_options
from spafit_exp.ops.masking import FlatParams
from spafit_exp.ops.optim import MaskedAdamW
from spafit_exp.ops.params import is_bitfit_param
from spafit_exp.ops.sampling import topk_indices
from tests.helpers import changed, snapshot, tiny_model, train_steps

TRAINER = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.1, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8})


def masked_cfg(name, **kw):
    base = {"name": name, "tag": name, "lr": 1e-2, "k": 50, "fraction": None, "candidates": "encoder",
            "update": "masked_step", "mu": "activation", "seed": 0}
    return method_options(OmegaConf.create({**base, **kw}))


def one_step(prepared, seed=0, optimizer=None):
    """One forward/backward, the hook, one optimizer step; returns snapshots before/after and the optimizer."""
    model = prepared.model
    optimizer = optimizer or prepared.make_optimizer(TRAINER)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(input_ids=ids, attention_mask=mask, labels=torch.randint(0, 2, (4,), generator=g)).loss.backward()
    prepared.before_step()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return before, {n: p.detach().clone() for n, p in model.named_parameters()}, optimizer


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("method", ["stoc_tuning", "top_tuning", "random_tuning"])
def test_masked_step_changes_exactly_k_elements(family, method):
    prepared = apply_method(tiny_model(family), masked_cfg(method, k=50))
    assert prepared.info["k"] == 50 and prepared.info["n"] > 1000
    opt = None
    for step in range(3):
        before, after, opt = one_step(prepared, seed=step, optimizer=opt)
        moved = sum(int((before[n] != after[n]).sum()) for n in before if "classifier" not in n)
        assert moved == 50
        assert all(not torch.equal(before[n], after[n]) for n in before if "classifier" in n)


def test_masked_step_leaves_unselected_moments_untouched():
    prepared = apply_method(tiny_model(), masked_cfg("stoc_tuning", k=30))
    _, _, opt = one_step(prepared)
    first = {p: (opt.state[p]["exp_avg"].clone(), opt.state[p]["step"].clone()) for p in prepared.flat.params}
    before, after, opt = one_step(prepared, seed=1, optimizer=opt)
    selected = opt.selected
    for p in prepared.flat.params:
        m0, t0 = first[p]
        untouched = torch.ones(p.numel(), dtype=torch.bool)
        untouched[selected[p]] = False
        assert torch.equal(opt.state[p]["exp_avg"].view(-1)[untouched], m0.view(-1)[untouched])
        assert torch.equal(opt.state[p]["step"].view(-1)[untouched], t0.view(-1)[untouched])
        assert (opt.state[p]["step"].view(-1)[selected[p]] == t0.view(-1)[selected[p]] + 1).all()


def test_masked_grad_zeroes_unselected_gradients():
    prepared = apply_method(tiny_model(), masked_cfg("top_tuning", k=40, update="masked_grad"))
    model = prepared.model
    ids = torch.randint(3, 100, (4, 12))
    model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    prepared.before_step()
    nonzero = sum(int((p.grad != 0).sum()) for p in prepared.flat.params if p.grad is not None)
    assert nonzero <= 40
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "classifier" in n)


def test_top_tuning_picks_largest_importance():
    prepared = apply_method(tiny_model(), masked_cfg("top_tuning", k=25))
    hook = prepared
    model = prepared.model
    optimizer = prepared.make_optimizer(TRAINER)
    ids = torch.randint(3, 100, (4, 12))
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    scores = hook.importance_sq().clone()
    hook.before_step()
    chosen = torch.cat([idx + start for idx, start in zip(optimizer.selected.values(), hook.flat.offsets)])
    assert set(chosen.tolist()) == set(torch.topk(scores, 25).indices.tolist())


def test_importance_uses_activation_means():
    """I^2 for a Linear weight equals (mean input over non-padding tokens * W * grad)^2."""
    model = tiny_model()
    prepared = apply_method(model, masked_cfg("top_tuning", k=10))
    hook = prepared
    ids = torch.randint(3, 100, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    captured = {}
    layer = prepared.model.bert.encoder.layer[0].intermediate.dense
    layer.register_forward_hook(lambda m, i, o: captured.update(x=i[0].detach()))
    prepared.model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss.backward()
    scores = hook.importance_sq()
    index = [n for n in hook.flat.names].index("bert.encoder.layer.0.intermediate.dense.weight")
    got = hook.flat.views(scores)[index]
    mu = captured["x"][mask.bool()].mean(0)
    expected = (mu * layer.weight * layer.weight.grad) ** 2
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-12)


def test_activation_means_same_unpadded_and_when_hidden_equals_length():
    """mu over real tokens is the same whether the encoder runs padded or unpadded (packed [1, tokens, hidden]),
    and the pooler's [batch, hidden] input is not taken for [batch, seq] when hidden equals the batch's length."""
    from spafit_exp.ops import unpad

    model = tiny_model()  # hidden 16
    prepared = apply_method(model, masked_cfg("top_tuning", k=10))
    for module in prepared.model.modules():  # no dropout, still training forwards (mu records those only)
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids = torch.randint(3, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 10:] = 0
    scores = []
    for enabled in (False, True):
        prepared.model.zero_grad(set_to_none=True)
        prepared.means.reset()
        with unpad.applied(prepared.model, enabled):
            prepared.model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss.backward()
        scores.append(prepared.importance_sq().clone())
    assert scores[0].max() > 0
    torch.testing.assert_close(scores[1], scores[0], rtol=1e-4, atol=1e-14)
    pooler = prepared.model.bert.pooler.dense
    index = prepared.flat.names.index("bert.pooler.dense.weight")
    with torch.no_grad():  # the pooler's input: the [CLS] states of both rows
        mu = prepared.model.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0].mean(0)
    expected = (mu * pooler.weight * pooler.weight.grad) ** 2
    torch.testing.assert_close(prepared.flat.views(scores[1])[index], expected, rtol=1e-4, atol=1e-14)


def test_default_k_is_bitfit_size():
    model = tiny_model("roberta")
    prepared = apply_method(model, masked_cfg("stoc_tuning", k=None))
    expected = sum(p.numel() for n, p in prepared.model.named_parameters() if is_bitfit_param(n))
    assert prepared.info["k"] == expected
    assert prepared.info["fraction"] == pytest.approx(expected / prepared.info["n"])


def test_frozen_and_multi_head():
    model = tiny_model()
    before = snapshot(model)
    prepared = apply_method(model, method_options(OmegaConf.create({"name": "frozen", "tag": "frozen", "lr": 1e-3})))
    train_steps(prepared)
    # BERT's task head is pooler + classifier (RoBERTa's classification head holds both parts itself)
    assert changed(before, snapshot(prepared.model)) == {n for n in before if "classifier" in n or ".pooler." in n}

    model = tiny_model("roberta")
    before = snapshot(model)
    prepared = apply_method(model, method_options(OmegaConf.create({"name": "multi_head", "tag": "mh", "lr": 1e-4,
                                                                    "include_layernorm": False})))
    train_steps(prepared)
    attention = re.compile(r"\.attention\.(self\.(query|key|value)|output\.dense)\.")
    assert changed(before, snapshot(prepared.model)) == {n for n in before if "classifier" in n or attention.search(n)}


def test_flat_params_split_roundtrip():
    params = [torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4))]
    flat = FlatParams([("a", params[0]), ("b", params[1])])
    assert flat.n == 10
    parts = flat.split(torch.tensor([9, 0, 5, 6]))
    assert [p.tolist() for p in parts] == [[0, 5], [0, 3]]


def test_masked_adamw_dense_matches_torch_adamw():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(20))
    b = torch.nn.Parameter(a.detach().clone())
    ours = MaskedAdamW([a], lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(20)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_masked_grad_is_dense_adamw_on_zero_masked_gradients():
    """The reference reading (ChildTuning's optimizer, DPS, FISH): zero the unselected gradients, then one dense
    AdamW step with global step count and bias correction — step by step equal to torch's AdamW on those
    gradients, with the encoder's decoupled weight decay applied to the drawn elements only; undrawn elements
    keep moving on momentum."""
    import copy

    prepared = apply_method(tiny_model(), masked_cfg("stoc_tuning", k=40, update="masked_grad"))
    prepared.model.eval()  # no dropout: both copies see the same forward
    reference = copy.deepcopy(prepared.model)
    hook = prepared
    drawn = []
    select = hook.select
    hook.select = lambda scores, h: drawn.append(select(scores, h)) or drawn[-1]
    ours = prepared.make_optimizer(TRAINER)
    groups = [{"params": [dict(reference.named_parameters())[n] for n, p in prepared.model.named_parameters()
                          if any(p is q for q in g["params"])], "weight_decay": g["weight_decay"],
               "drawn_decay": g.get("selective_decay", 0.0)} for g in ours.param_groups]
    assert {g["drawn_decay"] for g in groups} == {0.0, TRAINER.weight_decay}  # the encoder's decay is per element
    drawn_decay = {id(q): g["drawn_decay"] for g in groups for q in g["params"]}
    ref_opt = torch.optim.AdamW(groups, lr=TRAINER.lr, foreach=False)
    names = dict(zip([id(p) for p in hook.flat.params], hook.flat.names))
    moved_beyond_k = False
    for step in range(4):
        before = {n: p.detach().clone() for n, p in prepared.model.named_parameters()}
        g = torch.Generator().manual_seed(step)
        ids = torch.randint(3, 100, (4, 12), generator=g)
        labels = torch.randint(0, 2, (4,), generator=g)
        for model in (prepared.model, reference):
            model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
        hook.before_step()
        ref_params = dict(reference.named_parameters())
        for p, idx in zip(hook.flat.params, hook.split(drawn[-1])):
            keep = torch.zeros(p.numel(), dtype=torch.bool)
            keep[idx] = True
            ref = ref_params[names[id(p)]]
            ref.grad.mul_(keep.view_as(p))
            with torch.no_grad():  # AdamW's decoupled decay, on the drawn elements
                ref.mul_(torch.where(keep.view_as(p), 1 - TRAINER.lr * drawn_decay[id(ref)], 1.0))
        ours.step()
        ref_opt.step()
        ours.zero_grad(set_to_none=True)
        ref_opt.zero_grad(set_to_none=True)
        for n, p in prepared.model.named_parameters():
            assert torch.allclose(p, ref_params[n], atol=1e-6), (step, n)
        moved = sum(int((before[n] != p).sum()) for n, p in prepared.model.named_parameters() if "classifier" not in n)
        moved_beyond_k |= moved > 40
    assert moved_beyond_k  # momentum moves elements that were not drawn this step


def test_activation_means_ignore_evaluation_forwards():
    prepared = apply_method(tiny_model(), masked_cfg("stoc_tuning", k=50))
    means, model = prepared.means, prepared.model
    ids = torch.randint(3, 100, (2, 8))
    model.eval()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert not means.sums  # an eval pass records nothing
    model.train()
    model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert means.sums


def test_per_step_methods_count_one_steps_update_as_trainable():
    prepared = apply_method(tiny_model(), masked_cfg("stoc_tuning", k=50))
    head = sum(p.numel() for n, p in prepared.model.named_parameters() if "classifier" in n)
    dense = sum(p.numel() for p in prepared.model.parameters())
    assert prepared.info["trainable"] == 50 + head and prepared.info["dense_trainable"] == dense


def test_embedding_importance_is_the_dense_formula():
    """The embedding's I^2 is computed on the batch's rows only (mu = 0 elsewhere): equal to the dense
    (mu * theta * g)^2 everywhere, zeros included."""
    model = tiny_model()
    prepared = apply_method(model, masked_cfg("stoc_tuning", k=10))
    ids = torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    prepared.model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss.backward()
    hook = prepared
    scores = hook.importance_sq()
    words = prepared.model.bert.embeddings.word_embeddings.weight
    got = hook.flat.views(scores)[hook.flat.names.index("bert.embeddings.word_embeddings.weight")]
    mu = torch.bincount(ids[mask.bool()], minlength=words.shape[0]).float() / int(mask.sum())
    expected = (words.grad * words * mu[:, None]) ** 2
    assert got.count_nonzero() > 0
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0.0)


def backward_on_a_batch(prepared, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    prepared.model(input_ids=ids, attention_mask=mask, labels=torch.randint(0, 2, (3,), generator=g)).loss.backward()


def test_compact_scores_are_the_full_scores_without_the_absent_embedding_rows():
    """The per-step selection reads the compact layout (embedding matrices on the batch's rows only): it holds
    every positive score of the full layout, nothing else, and maps back to the same elements."""
    prepared = apply_method(tiny_model(), masked_cfg("stoc_tuning", k=10))
    backward_on_a_batch(prepared)
    hook = prepared
    full = hook.importance_sq().clone()
    compact = hook.importance_sq(compact=True).clone()
    assert compact.numel() < full.numel()
    assert torch.equal(torch.sort(compact[compact > 0]).values, torch.sort(full[full > 0]).values)
    def to_flat(index):
        return torch.cat([local + start for local, start in zip(hook.split(index), hook.flat.offsets)])

    everything = to_flat(torch.arange(compact.numel()))
    assert everything.unique().numel() == compact.numel()  # distinct elements
    assert bool((full[everything] == 0).sum() == (compact == 0).sum())
    positions = torch.cat([torch.randperm(compact.numel(), generator=torch.Generator().manual_seed(0))[:300],
                           torch.arange(compact.numel() - 50, compact.numel())])  # the embedding rows at the end
    for j in positions.tolist():  # each compact position is the flat element it maps to
        assert full[to_flat(torch.tensor([j]))].item() == compact[j].item()


def scored_step(method: str):
    """A masked_step run after one backward: (hook, full-layout scores, positive scores, compact layout size)."""
    prepared = apply_method(tiny_model(), masked_cfg(method, k=25, update="masked_step"))
    prepared.make_optimizer(TRAINER)
    backward_on_a_batch(prepared)
    hook = prepared
    full = hook.importance_sq().clone()
    return hook, full, int((full > 0).sum()), hook.importance_sq(compact=True).numel()


def selected_flat(hook) -> torch.Tensor:
    """The step's selection as flat indices of the full layout."""
    return torch.cat([idx + start for idx, start in zip(hook.optimizer.selected.values(), hook.flat.offsets)])


@pytest.mark.parametrize("size", ["small", "beyond_positive", "beyond_compact"])
def test_top_tuning_selects_what_the_full_layout_selects(size):
    """Same selections as before the compact layout: Top Tuning's k elements equal the top k of the full flat
    scores, also when fewer than k scores are positive (the zero-score elements the full layout picks) and when
    k exceeds the compact layout itself."""
    hook, full, positive, compact = scored_step("top_tuning")
    assert positive + 10 < compact < full.numel() - 10
    hook.k = {"small": 25, "beyond_positive": positive + 10, "beyond_compact": compact + 10}[size]
    hook.before_step()
    assert (hook.space is not None) == (size == "small")  # the compact layout ran, or the full one took over
    chosen = selected_flat(hook)
    assert torch.equal(torch.sort(chosen).values, topk_indices(full, hook.k))


def test_stochastic_tuning_with_fewer_positive_scores_than_k_draws_zeros_from_every_candidate():
    """With fewer than k positive scores the sample is every positive element plus zero-score ones drawn uniformly
    from all candidates, as in the full layout: rows of the word embedding absent from the batch included (the
    compact layout does not list them)."""
    hook, full, positive, compact = scored_step("stoc_tuning")
    hook.k = (positive + compact) // 2  # fits the compact layout: only the zero-score fallback reaches the full one
    hook.before_step()
    chosen = selected_flat(hook)
    assert chosen.unique().numel() == hook.k and bool(torch.isin(torch.nonzero(full > 0)[:, 0], chosen).all())
    word = hook.flat.names.index("bert.embeddings.word_embeddings.weight")
    start, end = hook.flat.offsets[word], hook.flat.offsets[word + 1]
    absent_rows = full[start:end].view(-1, hook.flat.params[word].shape[1]).sum(1) == 0
    in_words = chosen[(chosen >= start) & (chosen < end)] - start
    assert bool(absent_rows[in_words // hook.flat.params[word].shape[1]].any())
