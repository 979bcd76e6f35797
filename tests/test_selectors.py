"""Subset selection: sizes, the statistics against brute force, eq. 3, diff pruning, and that a subset run moves
only its selected elements with O(k) optimizer state."""

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from spafit_exp.engine.artefacts import TRAINABLE_FILE
from spafit_exp.ops import sparse_grad
from spafit_exp.ops.masking import FlatParams, bitfit_indices, candidate_params
from spafit_exp.ops.optim import masked_adamw, optimizer_state_bytes
from spafit_exp.ops.params import is_head
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from spafit_exp.run.spec import resolve
from spafit_exp.selection.selectors import Context, selector_options
from spafit_exp.selection.selectors.sqgrad import combine, downstream_stats, pretrain_stats, sq_grad_sum
from tests.conftest import TINY_RUN, compose
from tests.helpers import tiny_model

FAST = {"pretrain_samples": 16, "stat_batch_size": 4, "stat_samples": 32}


def run_cfg(tmp_path, selector, *extra):
    base = [*TINY_RUN, f"run.root={tmp_path}/out", f"data.cache_dir={tmp_path}/cache", "method=subset",
            f"selector={selector}", "decoder.epochs=1"]
    options = compose(base).selector
    fast = [f"selector.{k}={v}" for k, v in FAST.items() if k.split(".")[0] in options]  # the selector's own keys
    return compose([*base, *fast, *extra])


def test_combined_matches_eq3():
    down = torch.tensor([4.0, 1.0, 9.0, 0.0])
    pre = torch.tensor([1.0, 0.0, 8.0, 2.0])
    assert torch.allclose(combine(down, pre, "none"), torch.tensor([2.0, 1.0, 1.0, 0.0]))
    # mean-normalised: down/3.5, pre/2.75, then eq. 3
    expected = (down / 3.5) / (1 + pre / 2.75)
    assert torch.allclose(combine(down, pre, "mean"), expected)
    assert int(torch.topk(combine(down, pre, "mean"), 1).indices) == 0  # 9/(1+8) loses to 4/(1+1)


def test_default_combined_scores_eq3_literally(monkeypatch):
    """selector=combined's defaults score F_down / (1 + F_pretr) elementwise (eq. 3 as printed, no rescaling), and
    pick its top k: statistics of different scales, on which mean normalisation picks another set."""
    from spafit_exp.selection.selectors import sqgrad

    g = torch.Generator().manual_seed(0)
    down, pre = torch.rand(1000, generator=g) * 1e-3, torch.rand(1000, generator=g) * 1e2
    monkeypatch.setattr(sqgrad, "downstream_stats", lambda ctx: down)
    monkeypatch.setattr(sqgrad, "pretrain_stats", lambda ctx: pre)
    cfg = compose(["method=subset", "selector=combined"])
    options = selector_options(cfg.selector)
    torch.testing.assert_close(combine(down, pre, options.normalise), down / (1 + pre), rtol=0, atol=0)
    flat = FlatParams([("scores", torch.nn.Parameter(torch.zeros(1000)))])  # the index space the statistics cover
    picked = sqgrad.combined(Context(resolve(cfg), options, None, flat, 100, "none"))
    expected = set(torch.topk(down / (1 + pre), 100).indices.tolist())
    assert set(picked.index.tolist()) == expected
    assert set(torch.topk(combine(down, pre, "mean"), 100).indices.tolist()) != expected


@pytest.mark.parametrize("chunk", [1, 4])
def test_combined_none_is_eq3_of_means(tmp_path, chunk):
    """Eq. 2 makes each F a mean over its own N examples: with 6 training rows and 9 paragraphs, `none` is
    F_down_mean / (1 + F_pretr_mean), not a ratio of sums; the same for any stat_batch_size."""
    from spafit_exp.inputs.data import load_task_data, mlm_batches, wikitext_paragraphs
    from spafit_exp.inputs.modeling import build_tokenizer, mlm_model_like

    cfg = run_cfg(tmp_path, "combined", "selector.stat_samples=6", "selector.pretrain_samples=9",
                  "selector.normalise=none", "decoder.pretune=false", f"selector.stat_batch_size={chunk}")
    model, spec = tiny_model_from(cfg), resolve(cfg)
    flat = FlatParams(candidate_params(model, cfg.method.candidates))
    ctx = Context(spec, selector_options(cfg.selector), model, flat, 10, "none")
    scores = combine(downstream_stats(ctx), pretrain_stats(ctx), "none")

    tokenizer = build_tokenizer(spec.model)
    data = load_task_data(spec, tokenizer)
    down = sq_grad_sum(model, flat, [data.collate([row]) for row in data.train[:6]]) / 6  # one example per batch
    singles = [b for b in mlm_batches(wikitext_paragraphs()[:9], tokenizer, cfg.trainer.max_len, 1, cfg.trainer.seed)
               if (b["labels"] != -100).any()]
    pre = sq_grad_sum(mlm_model_like(spec.model, model, cfg.trainer.seed), flat, singles) / len(singles)
    assert len(singles) > 6
    expected = down / (1 + pre)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_sq_grad_sum_matches_brute_force():
    model = tiny_model()
    flat = FlatParams(candidate_params(model))
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(3, 100, (1, 7), generator=g), "labels": torch.tensor([i % 2])}
               for i in range(5)]
    stats = sq_grad_sum(model, flat, batches)
    expected = torch.zeros(flat.n)
    model.eval()
    for batch in batches:  # one example at a time, by hand
        model.zero_grad()
        model(**batch).loss.backward()
        expected += torch.cat([p.grad.reshape(-1) ** 2 for p in flat.params])
    assert torch.allclose(stats, expected, rtol=1e-5, atol=1e-12)
    top = set(torch.topk(stats, 20).indices.tolist())
    assert top == set(torch.topk(expected, 20).indices.tolist())


@pytest.mark.parametrize("selector", ["random", "bitfit", "downstream_sqgrad", "pretrain_sqgrad", "combined",
                                      "diff_pruning"])
def test_selector_returns_exactly_k(tmp_path, selector):
    cfg = run_cfg(tmp_path, selector, "selector.k=123")
    from spafit_exp.run.app import prepare as build_prepared

    prepared = build_prepared(resolve(cfg))
    info = prepared.info
    expected_k = 123 if selector != "bitfit" else info["k"]
    assert info["k"] == expected_k
    optimizer = prepared.make_optimizer(cfg.trainer)
    trained = optimizer.fixed | sparse_grad.selections(prepared.model)  # masked tensors + re-parametrised weights
    assert sum(idx.numel() for idx in trained.values()) == expected_k
    if selector == "bitfit":
        flat = FlatParams(candidate_params(prepared.model, cfg.method.candidates))
        assert expected_k == int(bitfit_indices(flat).numel())


def test_downstream_selection_is_topk_of_statistic(tmp_path):
    from spafit_exp.run.app import prepare as build_prepared

    cfg = run_cfg(tmp_path, "downstream_sqgrad", "selector.k=50")
    prepared = build_prepared(resolve(cfg))
    assert 0.0 <= prepared.info["decoder_dev"]["accuracy"] <= 1.0  # the decoder-only score is kept
    flat = FlatParams(candidate_params(prepared.model, cfg.method.candidates))
    context = Context(resolve(cfg), selector_options(cfg.selector), prepared.model, flat, 50, prepared.info["decoder"])
    stats = downstream_stats(context)  # from the cache
    optimizer = prepared.make_optimizer(cfg.trainer)
    offset = {id(p): start for p, start in zip(flat.params, flat.offsets)}
    trained = optimizer.fixed | sparse_grad.selections(prepared.model)
    chosen = {int(i) + offset[id(p)] for p, idx in trained.items() for i in idx}
    assert chosen == set(torch.topk(stats, 50).indices.tolist())


def test_subset_run_changes_only_masked_elements(tmp_path):
    cfg = run_cfg(tmp_path, "random", "selector.k=200", "trainer.epochs=2")
    record = run(cfg)
    from spafit_exp.engine.artefacts import load_run
    from spafit_exp.run.app import prepare as build_prepared

    head = sum(p.numel() for n, p in tiny_model_from(cfg).named_parameters() if is_head(n))
    assert record["status"] == "completed" and record["params"]["trainable"] == 200 + head
    base = build_prepared(resolve(cfg))  # theta0 (with the cached pre-tuned head)
    tuned, _ = load_run(run_dir(cfg))
    before = dict(base.model.named_parameters())
    moved = 0
    for name, p in tuned.model.named_parameters():
        if is_head(name):
            continue
        moved += int((p != before[name]).sum())
    assert 0 < moved <= 200


def test_diff_pruning_without_retraining_keeps_k_differences(tmp_path):
    from spafit_exp.run.app import prepare as build_prepared

    cfg = run_cfg(tmp_path, "diff_pruning_noretrain", "selector.k=77", "trainer.lr=1e-2")
    theta0 = {n: p.detach().clone() for n, p in tiny_model_from(cfg).named_parameters()}
    prepared = build_prepared(resolve(cfg))
    assert prepared.evaluate_only
    differing = sum(int((p != theta0[n]).sum()) for n, p in prepared.model.named_parameters() if not is_head(n))
    assert differing == 77
    record = run(cfg)
    assert record["metrics"]["best"]["epoch"] == 0


def tiny_model_from(cfg):
    from accelerate.utils import set_seed

    from spafit_exp.inputs.modeling import build_model

    spec = resolve(cfg)
    set_seed(spec.trainer.seed)
    return build_model(spec.model, spec.task)


def test_fixed_mask_optimizer_state_is_o_k():
    model = tiny_model()
    flat = FlatParams(candidate_params(model))
    fixed = {p: torch.arange(min(3, p.numel())) for p in flat.params}
    trainer = OmegaConf.create({"lr": 1e-3, "weight_decay": 0.0, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8})
    sparse = masked_adamw(model, trainer, fixed=fixed)
    dense = torch.optim.AdamW(model.parameters())
    model(input_ids=torch.randint(3, 100, (2, 5)), labels=torch.tensor([0, 1])).loss.backward()
    sparse.step()
    dense.step()
    assert optimizer_state_bytes(sparse) < 0.05 * optimizer_state_bytes(dense)


@pytest.mark.parametrize("selector", ["random", "downstream_sqgrad", "diff_pruning_noretrain"])
def test_subset_run_reloads_from_its_artefacts_alone(tmp_path, selector, monkeypatch):
    """The statistics/decoder cache deleted and every selection path made to fail: load_run still rebuilds the
    run's model from trainable.safetensors and reproduces its dev metric exactly."""
    import shutil

    from accelerate import Accelerator

    from spafit_exp.engine.artefacts import load_run
    from spafit_exp.engine.loop import evaluate
    from spafit_exp.inputs.data import load_task_data
    from spafit_exp.inputs.modeling import build_tokenizer
    from spafit_exp.selection import decoder
    from spafit_exp.selection import stage as selection
    from spafit_exp.selection.selectors import diff_pruning as pruning
    from spafit_exp.selection.selectors import sqgrad

    cfg = run_cfg(tmp_path, selector, "selector.k=150", "trainer.epochs=2", "trainer.lr=1e-2")
    record = run(cfg)
    shutil.rmtree(tmp_path / "cache" / "stats", ignore_errors=True)  # the random selector keeps none
    shutil.rmtree(tmp_path / "cache" / "decoders")

    def recompute(*args, **kwargs):
        raise AssertionError("reloading a finished run must not select again")

    from spafit_exp.run import app

    for module, name in [(selection, "run_selection"), (app, "run_selection"), (decoder, "pretuned_head"),
                         (selection, "pretuned_head"), (sqgrad, "sq_grad_sum"), (pruning, "pruning_finetune")]:
        monkeypatch.setattr(module, name, recompute)
    prepared, saved = load_run(run_dir(cfg))
    spec = resolve(cfg)
    data = load_task_data(spec, build_tokenizer(spec.model))
    from torch.utils.data import DataLoader

    dev = evaluate(prepared.model, {"dev": DataLoader(data.evals["dev"], batch_size=32, collate_fn=data.collate)},
                   spec.task, Accelerator())
    assert dev["accuracy"] == record["metrics"]["best"]["dev"]["accuracy"]
    own = dict(prepared.model.named_parameters())
    assert prepared.model.state_dict().keys() == tiny_model_from(cfg).state_dict().keys()  # the plain model's tensors
    stored = load_file(run_dir(cfg) / TRAINABLE_FILE)
    for name in (n.removesuffix(".__idx") for n in stored if n.endswith(".__idx")):  # evaluating left them as saved
        assert torch.equal(own[name].detach().view(-1)[stored[f"{name}.__idx"]], stored[f"{name}.__val"]), name
