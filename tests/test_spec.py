"""The run's frozen, typed spec (spafit_exp/core/spec.py), resolved once from the composed config
(spafit_exp/run/spec.py): immutable, the config's own values (so cache keys, records and fingerprints stay what they
were), the method's and selector's options parsed once per run, sub-runs built with `dataclasses.replace`."""

import copy
import dataclasses
import pickle

import pytest
from omegaconf import OmegaConf

from spafit_exp.core import fingerprint
from spafit_exp.core import spec as specs
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.spec import plain, stored_specs
from spafit_exp.run.spec import resolve
from tests.conftest import TINY_RUN, compose

SUBSET = [*TINY_RUN, "method=subset", "selector=diff_pruning", "selector.k=40"]
CONFIGS = [TINY_RUN, SUBSET, [*TINY_RUN, "model.head=linear", "trainer.adam_betas=[0.9,0.98]"],
           ["model=roberta_base", "method=lora_r4", "task=trec6"], [*TINY_RUN, "study=transfer", "task=conll2003"]]


def test_the_spec_is_frozen():
    spec = resolve(compose(SUBSET))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.trainer = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.trainer.lr = 1.0
    for mapping in (spec.model.arch, spec.task.files, spec.task.hub.splits, spec.config, spec.config["trainer"]):
        with pytest.raises(TypeError, match="frozen"):
            mapping["x"] = 1
    assert isinstance(spec.task.metrics, tuple) and isinstance(spec.trainer.adam_betas, tuple)
    assert pickle.loads(pickle.dumps(spec)) == spec == copy.deepcopy(spec)  # a frozen mapping copies as one


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: " ".join(o[-2:]))
def test_the_spec_holds_the_configs_own_values(overrides):
    """What cache keys (run_key: the model; the tokenized cache: the task; diff pruning: the trainer), records and
    the tracker read from a spec equals what they read from the config; the fingerprint, computed once when the spec
    is resolved, is the config's (existing run directories keep theirs)."""
    cfg = compose(overrides)
    spec = resolve(cfg)
    for group in ("task", "model", "trainer", "data", "decoder", "tracking"):
        assert plain(getattr(spec, group)) == OmegaConf.to_container(cfg[group], resolve=True), group
    assert plain(spec.config) == OmegaConf.to_container(cfg, resolve=True)
    assert plain(spec.run.fingerprint) == fingerprint.of(cfg)
    assert plain(spec.study.settings) == {k: v for k, v in OmegaConf.to_container(cfg.study, resolve=True).items()
                                          if k != "name"}


def test_options_are_parsed_once_per_run(tmp_path, monkeypatch):
    """The method's and the selector's config nodes become typed options when the spec is resolved, and nowhere
    else: a run's validation, selection stage and method receive the parsed options."""
    from spafit_exp import methods
    from spafit_exp.run.app import run
    from spafit_exp.selection import selectors

    parsed = []
    for module in (methods, selectors):
        real = module.typed_options
        monkeypatch.setattr(module, "typed_options", lambda schema, node, key, real=real: parsed.append(key)
                            or real(schema, node, key))
    assert run(compose([*SUBSET, "selector=random", "trainer.dry_run=true", f"run.root={tmp_path}"])) is None
    assert sorted(parsed) == ["method", "selector"]


def test_sub_runs_replace_and_leave_the_run_spec_as_it_was():
    from spafit_exp.selection.decoder import decoder_spec
    from spafit_exp.studies.transfer import transfer_spec

    cfg = compose([*TINY_RUN, "study=transfer", "task=trec6"])
    spec = resolve(cfg)
    before = plain(spec.trainer)
    tuned = decoder_spec(spec, spec.decoder.recipe, seed=7)
    assert (tuned.trainer.lr, tuned.trainer.epochs, tuned.trainer.seed, tuned.method.name) == \
        (spec.decoder.lr, spec.decoder.epochs, 7, "frozen")
    assert plain(spec.trainer) == before and spec.method.name == "full_ft"
    # the transfer study's record: the fingerprint its config had when the study changed the config itself
    other, _ = stored_specs(OmegaConf.to_container(compose(["model=minilm"]), resolve=True))
    model_config = OmegaConf.to_container(compose(["model=minilm"]).model, resolve=True)
    moved = transfer_spec(spec, other, model_config, 3e-4, 5)
    old = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    old.model = model_config
    old.trainer.update(lr=3e-4, seed=5, checkpoint_every=0)
    assert plain(moved.run.fingerprint) == fingerprint.of(old)
    assert plain(moved.config) == OmegaConf.to_container(old)
    assert (moved.model.name, moved.trainer.seed, spec.model.name, spec.trainer.seed) == ("minilm", 5, "tiny_bert", 1)


def test_a_missing_key_is_one_line_and_a_records_missing_key_reads_as_none():
    cfg = compose(TINY_RUN)
    tree = OmegaConf.to_container(cfg, resolve=True)
    del tree["task"]["report"], tree["model"]["head"]
    with pytest.raises(ConfigError, match=r"^task\.report: missing$"):
        specs.build(specs.TaskSpec, tree["task"], "task")
    model, task = stored_specs(tree)  # a record written before the keys existed
    assert model.head is None and task.report is None and task.name == "rte"


def test_specs_hold_no_defaults_and_the_schema_is_theirs():
    """Each default lives once, in the YAML: the specs declare none (only what the run sets itself), and Hydra's typed
    schema is derived from them (one list of keys)."""
    from spafit_exp.run import schema

    pairs = {specs.TrainerSpec: schema.TrainerConfig, specs.DecoderSpec: schema.DecoderConfig,
             specs.DataSpec: schema.DataConfig, specs.RunOptions: schema.RunConfig,
             specs.TrackingSpec: schema.TrackingConfig, specs.TaskSpec: schema.TaskConfig,
             specs.ModelSpec: schema.ModelConfig, specs.HubSpec: schema.HubConfig, specs.HoldoutSpec: schema.HoldoutConfig,
             specs.SizeSpec: schema.SizeConfig}
    for spec_class, schema_class in pairs.items():
        keys = [f for f in dataclasses.fields(spec_class) if not f.metadata.get("resolved")]
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in keys)
        assert [f.name for f in dataclasses.fields(schema_class)] == [f.name for f in keys], spec_class
