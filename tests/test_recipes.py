"""The paper presets carry the papers' recipes (fidelity issue, item 8): the subset paper's 1-2-5 grid up to 0.1,
QNLI at 2 epochs inside subset_table1, Random Tuning in stoc_table1, the regularised-FT coefficients."""

import pytest
from omegaconf import OmegaConf

from spafit_exp import CONF_DIR
from tests.conftest import compose


def test_subset_grid_is_one_two_five_up_to_a_tenth():
    values = [float(v) for v in compose(["lr_grid=subset"]).lr_grid["values"]]
    assert max(values) == 0.1 and min(values) == 1e-5
    mantissas = {round(v / 10 ** int(f"{v:e}".split("e")[1]), 6) for v in values}
    assert mantissas == {1.0, 2.0, 5.0}
    assert all(b / a in (2.0, 2.5) for a, b in zip(values, values[1:]))


def test_subset_table1_trains_qnli_for_two_epochs_and_the_rest_for_four():
    assert compose(["experiment=subset_table1", "task=qnli", "trainer.dry_run=true"]).trainer.epochs == 2
    assert compose(["experiment=subset_table1", "task=trec6"]).trainer.epochs == 4
    assert compose(["experiment=subset_table1", "task=trec6", "trainer.epochs=3"]).trainer.epochs == 3
    cfg = compose(["experiment=subset_table1"])
    assert cfg.lr_grid.name == "subset" and cfg.experiment_name == "subset_table1"


def test_stoc_table1_sweeps_random_tuning_too():
    preset = OmegaConf.load(CONF_DIR / "experiment" / "stoc_table1.yaml")
    methods = preset.hydra.sweeper.params.method.split(",")
    assert {"random_tuning", "top_tuning", "stoc_tuning", "dps_mix"} <= set(methods)


def test_regularised_ft_defaults_to_the_papers_smallest_coefficient():
    for method in ("full_ft_l1", "full_ft_l2"):
        assert compose([f"method={method}"]).method.coefficient == 0.01


def test_mean_reduction_divides_the_pull_by_the_encoder_size():
    from spafit_exp.methods.regularized import DistancePenalty
    from tests.helpers import tiny_model

    model = tiny_model()
    summed, averaged = DistancePenalty(model, "l1", 0.5, "sum"), DistancePenalty(model, "l1", 0.5, "mean")
    elements = sum(p.numel() for p, _ in summed.pairs)
    assert averaged.coefficient == pytest.approx(0.5 / elements) and summed.coefficient == 0.5
