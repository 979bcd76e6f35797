"""Typed schema of the trainer, data and decoder groups, registered in Hydra's ConfigStore: a misspelt key or a
value of the wrong type (`trainer.epochs=three`) fails while the config is composed, before anything loads. The schema
holds types only (every field MISSING), derived from the run's frozen specs (core/spec.py: one list of keys); the values
live once, in conf/trainer/default.yaml and conf/config.yaml.
Ranges and cross-field rules (lr > 0, SPAFIT groups vs the model's depth, k vs the candidate count) live in
`validation.validate`. Method and selector options differ per method and are checked by each method's own `validate`.

Hydra's `+key=value` adds a key to any node, typed or not, so the keys of every node with a fixed set of keys
(KEYED: these three, run, tracking, task, model, lr_grid) are checked again after composing (`unknown_key`)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from typing import Any, Optional, get_args, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from spafit_exp.core import spec as specs
from spafit_exp.core.errors import ConfigError


def _nested(hint: Any) -> type | None:
    """The dataclass a field holds (itself, or inside Optional[...]), else None."""
    for candidate in (hint, *get_args(hint)):
        if is_dataclass(candidate):
            return candidate
    return None


def _types_of(spec: type, nested: dict[type, type]) -> type:
    """The schema of a spec class (core/spec.py): its keys and types, every value MISSING — the values live once,
    in the YAML; a spec's nested specs become their schemas (`nested`). Fields the run sets itself are left out."""
    hints = get_type_hints(spec)

    def swap(hint):
        inner = _nested(hint)
        return hint if inner is None else Optional[nested[inner]] if inner is not hint else nested[inner]

    return make_dataclass(spec.__name__.replace("Spec", "Config").replace("Options", "Config"),
                          [(f.name, swap(hints[f.name]), field(default=MISSING)) for f in fields(spec)
                           if not f.metadata.get("resolved")])


# Registered with Hydra (typed: a value of the wrong type fails while composing).
TrainerConfig = _types_of(specs.TrainerSpec, {})
DecoderConfig = _types_of(specs.DecoderSpec, {})
DataConfig = _types_of(specs.DataSpec, {})
# The groups below are not registered with Hydra (their values keep the YAMLs' own types): only their keys are
# checked, by `unknown_key` after composing. A key added to one of their YAMLs must be added to its spec too.
RunConfig = _types_of(specs.RunOptions, {})
TrackingConfig = _types_of(specs.TrackingSpec, {})
HubConfig = _types_of(specs.HubSpec, {})
HoldoutConfig = _types_of(specs.HoldoutSpec, {})
SizeConfig = _types_of(specs.SizeSpec, {})
TaskConfig = _types_of(specs.TaskSpec, {specs.HubSpec: HubConfig, specs.HoldoutSpec: HoldoutConfig,
                                        specs.SizeSpec: SizeConfig})
ModelConfig = _types_of(specs.ModelSpec, {})


@dataclass
class LrGridConfig:
    name: str = MISSING
    values: list[float] = MISSING


KEYED = {"trainer": TrainerConfig, "data": DataConfig, "decoder": DecoderConfig, "run": RunConfig,
         "tracking": TrackingConfig, "task": TaskConfig, "model": ModelConfig, "lr_grid": LrGridConfig}


def unknown_key(node: DictConfig, schema: type, where: str) -> ConfigError | None:
    """The first key of `node` (nested dataclass fields included) that `schema` does not have, as the one-line
    error to raise: `trainer.epoch: no such key; did you mean trainer.epochs?`. None when every key is known."""
    hints = get_type_hints(schema)
    allowed = [f.name for f in fields(schema)]
    for key in node.keys():
        key = str(key)
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean {where}.{close[0]}?" if close else f"{where} has {', '.join(allowed)}"
            return ConfigError(f"{where}.{key}: no such key; {hint}")
        inner = _nested(hints.get(key))
        if inner is not None and not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
            found = unknown_key(node[key], inner, f"{where}.{key}")
            if found is not None:
                return found
    return None


def register() -> None:
    """Idempotent; called before any compose (the CLI and `config.compose`)."""
    store = ConfigStore.instance()
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    store.store(name="data_schema", node={"data": DataConfig}, package="_global_")
    store.store(name="decoder_schema", node={"decoder": DecoderConfig}, package="_global_")
