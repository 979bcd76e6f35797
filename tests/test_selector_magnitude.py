"""The worked example of adding a selector (README "Adding a selector"): spafit_exp/selection/selectors/magnitude.py +
conf/selector/magnitude.yaml + this test. The selector is found by the registry, composes, validates, and picks
exactly the k largest |theta0| among the candidates."""

import torch

from spafit_exp.ops.masking import FlatParams, candidate_params
from spafit_exp.run.app import prepare
from spafit_exp.run.spec import resolve
from spafit_exp.run.validation import validate
from spafit_exp.selection.selectors import SELECTORS
from tests.conftest import TINY_RUN, compose


def test_registered_and_composes():
    assert "magnitude" in SELECTORS.names()
    cfg = compose(["method=subset", "selector=magnitude"])
    validate(cfg)
    assert cfg.method.tag == "subset-magnitude" and cfg.trainer.lr == cfg.selector.lr


def test_picks_the_largest_magnitudes(tmp_path):
    cfg = resolve(compose([*TINY_RUN, "method=subset", "selector=magnitude", "selector.k=40",
                           "decoder.pretune=false", f"data.cache_dir={tmp_path}"]))
    prepared = prepare(cfg)
    theta0 = torch.cat([p.detach().abs().reshape(-1) for _, p in candidate_params(prepare(cfg).model)])
    flat = FlatParams(candidate_params(prepared.model))
    optimizer = prepared.make_optimizer(cfg.trainer)
    offset = {id(p): start for p, start in zip(flat.params, flat.offsets)}
    chosen = {int(i) + offset[id(p)] for p, idx in optimizer.fixed.items() for i in idx}
    assert chosen == set(torch.topk(theta0, 40).indices.tolist())
