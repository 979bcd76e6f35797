"""Decoder pre-tuning is a stage of its own (`decoder.pretune`): by default only fixed-subset runs pre-tune (their
selection statistics need a tuned head); `subset_table1` pre-tunes for every variant it compares, baselines
included, as the subset paper does."""

import pytest
import torch
from safetensors.torch import load_file

from spafit_exp.ops.params import is_head
from spafit_exp.run.app import prepare as prepare_spec
from spafit_exp.run.spec import resolve
from tests.conftest import TINY_RUN, compose


def prepare(cfg):
    return prepare_spec(resolve(cfg))


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
    from spafit_exp.run.app import run
    from tests.test_selectors import run_cfg

    records = []
    for attempt in range(2):  # first: decoder and statistics computed; second: both from the cache
        cfg = run_cfg(tmp_path, "downstream_sqgrad", "selector.k=60", "trainer.epochs=2", "run.force=true",
                      "trainer.log_every=1")
        records.append(run(cfg))
    assert records[0]["train"]["losses"] == records[1]["train"]["losses"]


def _pretrained_tiny(tmp_path) -> list[str]:
    """tiny_bert's encoder saved as a checkpoint without a head (like the embedded MiniLM): its theta0 is the same
    for every seed, so its stages can be shared (a random-init model's theta0 is the seed's own)."""
    from tests.test_selectors import tiny_model_from

    folder = tmp_path / "tiny_encoder"
    if not folder.is_dir():
        tiny_model_from(_cfg(tmp_path)).bert.save_pretrained(folder)
    return ["model.init=pretrained", f"model.path={folder}"]


def _stage_files(cache) -> dict:
    """Every cached decoder and statistic under `cache`, by file name, as tensors."""
    files = sorted([*cache.glob("decoders/*.safetensors"), *cache.glob("stats/*.pt")])
    return {f.name: load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, weights_only=True)
            for f in files}


@pytest.mark.parametrize("selector", ["combined", "diff_pruning"])
def test_seeds_share_one_decoder_and_one_selection_stage(tmp_path, selector):
    """decoder.stage_seed=shared (default), as the paper: the runs of seeds 1 and 2 use one decoder file and one
    statistics (or pruning fine-tune) file, train from the same head and select the same subset; and the shared
    files do not depend on which seed computed them (seed 2 alone, in a cache of its own, writes the same)."""
    from tests.test_selectors import run_cfg

    extra = [*_pretrained_tiny(tmp_path), "selector.k=30", *(["selector.prune_lr=1e-2"] if selector == "diff_pruning"
                                                             else [])]
    prepared = [prepare(run_cfg(tmp_path / "both", selector, *extra, f"trainer.seed={seed}")) for seed in (1, 2)]
    shared = _stage_files(tmp_path / "both" / "cache")
    assert len([n for n in shared if n.endswith(".safetensors")]) == 1
    assert len([n for n in shared if n.endswith(".pt")]) == (2 if selector == "combined" else 1)  # F_down, F_pretr
    assert prepared[0].info["decoder"] == prepared[1].info["decoder"]
    states = [{n: t for n, t in p.export_state(p.model).items() if n.endswith(".__idx") or is_head(n)}
              for p in prepared]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][n], states[1][n]) for n in states[0])  # one head, one subset

    prepare(run_cfg(tmp_path / "alone", selector, *extra, "trainer.seed=2"))
    alone = _stage_files(tmp_path / "alone" / "cache")
    assert alone.keys() == shared.keys()
    for name, value in shared.items():
        tensors = value if isinstance(value, dict) else {"": value}
        other = alone[name] if isinstance(value, dict) else {"": alone[name]}
        assert all(torch.equal(t, other[key]) for key, t in tensors.items() if torch.is_tensor(t)), name


def test_stage_seed_run_keeps_one_decoder_per_seed(tmp_path):
    from spafit_exp.inputs.data import STAGE_SEED, stage_seed
    from tests.test_selectors import run_cfg

    for seed in (1, 2):
        prepare(run_cfg(tmp_path, "downstream_sqgrad", *_pretrained_tiny(tmp_path), "selector.k=30",
                        f"trainer.seed={seed}", "decoder.stage_seed=run"))
    files = _stage_files(tmp_path / "cache")
    assert sum(n.endswith(".safetensors") for n in files) == 2 and sum(n.endswith(".pt") for n in files) == 2
    assert stage_seed(resolve(_cfg(tmp_path, "trainer.seed=2"))) == 2  # tiny_bert is random-init: theta0 is the seed's
    assert stage_seed(resolve(_cfg(tmp_path, "trainer.seed=2", *_pretrained_tiny(tmp_path)))) == STAGE_SEED
