"""Decoder pre-tuning is a stage of its own (`decoder.pretune`): by default only fixed-subset runs pre-tune (their
selection statistics need a tuned head); `subset_table1` pre-tunes for every variant it compares, baselines
included, as the subset paper does."""

import torch
from safetensors.torch import load_file

from spafit_exp.app import prepare
from spafit_exp.params import is_head
from tests.conftest import TINY_RUN, compose


def _cfg(tmp_path, *extra):
    return compose([*TINY_RUN, f"run.root={tmp_path}/out", f"data.cache_dir={tmp_path}/cache", "decoder.epochs=1",
                    *extra])


def test_baselines_start_from_the_pretuned_decoder_when_asked(tmp_path):
    for method in ("full_ft", "lora_r4"):
        prepared = prepare(_cfg(tmp_path, f"method={method}", "decoder.pretune=true"))
        head = load_file(prepared.info["decoder"])
        own = {n.replace(".base_layer", ""): p for n, p in prepared.model.named_parameters() if is_head(n)}
        assert head and all(torch.equal(own[n], t) for n, t in head.items()), method
        assert "accuracy" in prepared.info["decoder_dev"]


def test_default_pretunes_fixed_subsets_only(tmp_path):
    assert "decoder" not in prepare(_cfg(tmp_path, "method=full_ft")).info
    assert "decoder" in prepare(_cfg(tmp_path, "method=subset", "selector=random")).info
    assert "decoder" not in prepare(_cfg(tmp_path, "method=subset", "selector=random", "decoder.pretune=false")).info


def test_subset_table1_pretunes_every_variant():
    cfg = compose(["experiment=subset_table1", "method=full_ft", "selector=none"])
    assert cfg.decoder.pretune is True


def test_a_run_does_not_depend_on_its_stage_caches(tmp_path):
    """The decoder pre-tuning and the selector train only when their caches miss; the run after them must draw
    the same dropout either way (same losses, same trained values)."""
    from spafit_exp.app import run
    from tests.test_selectors import run_cfg

    records = []
    for attempt in range(2):  # first: decoder and statistics computed; second: both from the cache
        cfg = run_cfg(tmp_path, "downstream_sqgrad", "selector.k=60", "trainer.epochs=2", "run.force=true",
                      "trainer.log_every=1")
        records.append(run(cfg))
    assert records[0]["train"]["losses"] == records[1]["train"]["losses"]
