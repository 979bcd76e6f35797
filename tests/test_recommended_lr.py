"""Recommended learning rates: a run without trainer.lr uses its method's (or, for method=subset, its selector's)
rate; an explicit trainer.lr wins; the end-of-run summary warns when the loss stays flat."""

import pytest

from spafit_exp import CONF_DIR
from spafit_exp.inputs.metrics import loss_falls
from spafit_exp.run.console import summary
from tests.conftest import compose

METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml") if p.stem != "subset" and not p.stem.startswith("_"))
SELECTORS = sorted(p.stem for p in (CONF_DIR / "selector").glob("*.yaml") if p.stem != "none" and not p.stem.startswith("_"))
FULL_FT_RATES = (1e-5, 2e-5, 3e-5, 5e-5, 6e-5, 1e-4)  # the papers' full fine-tuning range


@pytest.mark.parametrize("method", METHODS)
def test_method_rate_is_the_default(method):
    cfg = compose([f"method={method}"])
    assert isinstance(cfg.method.lr, float) and cfg.method.lr > 0
    assert cfg.trainer.lr == cfg.method.lr
    assert f"/lr={cfg.method.lr}/" in cfg.run.dir  # the directory names the rate actually used


@pytest.mark.parametrize("selector", SELECTORS)
def test_subset_rate_comes_from_the_selector(selector):
    cfg = compose(["method=subset", f"selector={selector}"])
    assert cfg.trainer.lr == cfg.selector.lr > 0


def test_peft_rates_exceed_full_ft_and_full_ft_keeps_a_full_ft_rate():
    rate = {m: compose([f"method={m}"]).trainer.lr for m in ("full_ft", "full_bitfit", "lora", "spafit", "stoc_tuning")}
    assert rate["full_ft"] in FULL_FT_RATES
    assert all(rate[m] >= 4 * rate["full_ft"] for m in ("full_bitfit", "lora", "spafit", "stoc_tuning"))


@pytest.mark.parametrize("method", ["spafit", "full_ft", "lora_r4"])
def test_explicit_lr_wins(method):
    cfg = compose([f"method={method}", "trainer.lr=1.5e-5"])
    assert cfg.trainer.lr == 1.5e-5 and "/lr=1.5e-05/" in cfg.run.dir


def test_subset_without_selector_is_one_line(tmp_path):
    from tests.conftest import run_cli

    proc = run_cli(["method=subset", f"run.root={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "method=subset" in proc.stderr and "selector=" in proc.stderr and not any(tmp_path.iterdir())


def test_loss_falls():
    assert loss_falls([(1, 0.70), (2, 0.69), (3, 0.60), (4, 0.55)])
    assert not loss_falls([(1, 0.6931), (2, 0.6932), (3, 0.6931)])
    assert not loss_falls([(1, 0.5)])
    assert loss_falls([(1, 0.7), (2, 0.9), (3, 0.5), (4, 0.6), (5, 0.4), (6, 0.4)])  # one noisy window tolerated


def _record(losses):
    return {"metrics": {"best": {"epoch": 2, "dev": {"accuracy": 0.53}}}, "train": {"losses": losses},
            "timing": {"train_samples_per_s": 80.0, "wall_s": 300.0}, "memory": {"peak_bytes": 2**30},
            "config": {"trainer": {"lr": 2e-5}, "method": {"name": "spafit"}, "task": {"name": "rte"},
                       "selector": {"name": "none"}}}


def test_summary_warns_on_a_flat_loss(tmp_path):
    flat = summary(_record([(20, 0.6931), (40, 0.6931), (60, 0.6932)]), tmp_path)
    assert "warning: the training loss did not fall" in flat and "lr_grid=" in flat and "trainer.lr=2e-05" in flat
    learning = summary(_record([(20, 0.69), (40, 0.62), (60, 0.55)]), tmp_path)
    assert "warning" not in learning and "train loss 0.6900 -> 0.5500" in learning and "80.0 samples/s" in learning
