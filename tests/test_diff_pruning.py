"""Diff pruning prunes once: the L1 fine-tune runs at the selector's own rate (selector.prune_lr) and its deltas
are cached per (model, task, seed, recipe), so every retraining learning rate of a grid retrains the same mask."""

from spafit_exp.app import prepare
from spafit_exp.selectors import diff_pruning as pruning
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
        prepared = prepare(run_cfg(tmp_path, "diff_pruning", "selector.k=60", f"trainer.lr={lr}",
                                   "selector.prune_lr=2e-3"))
        state = prepared.export_state(prepared.model)
        masks.append({n: t.tolist() for n, t in state.items() if n.endswith(".__idx")})
    assert calls == [2e-3]  # once, at prune_lr, whatever the retraining rate
    assert masks[0] == masks[1]
