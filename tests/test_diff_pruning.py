"""Diff pruning prunes once: the L1 fine-tune runs at the selector's own rate (selector.prune_lr) and its deltas
are cached per (model, task, decoder, recipe), so every retraining learning rate of a grid retrains the same mask;
by default (the paper's procedure) the mask is the top k of the finished fine-tune's |theta - theta0|."""

from spafit_exp.run.app import prepare
from spafit_exp.run.spec import resolve
from spafit_exp.selection.selectors import diff_pruning as pruning
from tests.test_selectors import run_cfg


def test_one_pruning_finetune_serves_every_retraining_lr(tmp_path, monkeypatch):
    calls = []
    real = pruning.train

    def counted(cfg, *args, **kwargs):
        calls.append(float(cfg.trainer.lr))
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(pruning, "train", counted)
    masks = []
    for lr in ("1e-2", "3e-3"):
        prepared = prepare(resolve(run_cfg(tmp_path, "diff_pruning", "selector.k=60", f"trainer.lr={lr}",
                                           "selector.prune_lr=2e-3")))
        state = prepared.export_state(prepared.model)
        masks.append({n: t.tolist() for n, t in state.items() if n.endswith(".__idx")})
    assert calls == [2e-3]  # once, at prune_lr, whatever the retraining rate
    assert masks[0] == masks[1]


def test_default_prunes_once_after_the_l1_finetune(tmp_path, monkeypatch):
    """selector=diff_pruning's defaults are the paper's procedure (dguo98/DiffPruning run_glue_mag.py): a full
    L1-penalised fine-tune with no pruning inside it — its final model differs from theta0 in far more than k
    candidates — then, once, the k largest |theta - theta0| of that final model."""
    import torch

    from spafit_exp.ops.masking import FlatParams, candidate_params
    from spafit_exp.selection.stage import pretune_decoder, run_selection
    from tests.test_selectors import tiny_model_from

    finetuned, penalties = {}, []
    real = pruning.train

    def keep_model(cfg, prepared, *args, **kwargs):
        penalties.append(prepared.info.get("penalty"))
        outcome = real(cfg, prepared, *args, **kwargs)
        finetuned.update({n: p.detach().clone() for n, p in prepared.model.named_parameters()})
        return outcome

    monkeypatch.setattr(pruning, "train", keep_model)
    k = 40
    cfg = run_cfg(tmp_path, "diff_pruning", f"selector.k={k}", "selector.prune_lr=1e-2", "trainer.epochs=2")
    model, spec = tiny_model_from(cfg), resolve(cfg)
    decoder = pretune_decoder(spec, model, fixed_subset=True)
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}  # with the pre-tuned head
    selection = run_selection(spec, model, decoder["decoder"])
    assert penalties == ["l1"]
    names = FlatParams(candidate_params(model, cfg.method.candidates)).names
    delta = torch.cat([(finetuned[n] - theta0[n]).reshape(-1) for n in names])
    assert int(torch.count_nonzero(delta)) > 100 * k  # nothing pruned while it trained (gradual leaves exactly k)
    assert selection.index.tolist() == torch.topk(delta.abs(), k).indices.sort().values.tolist()


def test_gradual_pruning_keeps_the_finetuned_model(tmp_path, monkeypatch):
    """selector=diff_pruning_gradual_noretrain (prune_schedule=gradual): the fine-tune itself ends with exactly k
    differences among the candidates and nothing else of the encoder moved, so the pruned model is the fine-tuned
    model (nothing lost by pruning)."""
    import torch

    from spafit_exp.ops.params import is_head
    from tests.test_selectors import tiny_model_from

    finetuned = {}
    real = pruning.train

    def keep_model(cfg, prepared, *args, **kwargs):
        outcome = real(cfg, prepared, *args, **kwargs)
        finetuned.update({n: p.detach().clone() for n, p in prepared.model.named_parameters()})
        return outcome

    monkeypatch.setattr(pruning, "train", keep_model)
    cfg = run_cfg(tmp_path, "diff_pruning_gradual_noretrain", "selector.k=40", "selector.prune_lr=1e-2",
                  "trainer.epochs=2", "selector.prune_end=0.5")
    assert cfg.selector.prune_schedule == "gradual" and not cfg.selector.retrain
    theta0 = {n: p.detach().clone() for n, p in tiny_model_from(cfg).named_parameters()}
    prepared = prepare(resolve(cfg))
    encoder = [n for n in theta0 if not is_head(n)]
    moved = sum(int((finetuned[n] != theta0[n]).sum()) for n in encoder)
    assert moved == 40  # under prune_schedule=once the fine-tune moves (almost) every element: 1,011,328 here
    for name, p in prepared.model.named_parameters():
        assert torch.allclose(p, finetuned[name], rtol=0, atol=1e-6), name  # theta0 + (theta - theta0): rounding


def test_cubic_schedule_reaches_k_at_prune_end():
    import torch

    from spafit_exp.ops.masking import FlatParams

    weight = torch.nn.Parameter(torch.zeros(1000))
    schedule = pruning.GradualPruning(FlatParams([("w", weight)]), [weight.detach().clone()], k=10, end=0.5)
    schedule.on_schedule(100)
    kept = [schedule.keep(step) for step in range(0, 101)]
    assert kept[0] == 1000 and kept[50] == 10 and kept[100] == 10
    assert all(a >= b for a, b in zip(kept, kept[1:]))  # never grows back
