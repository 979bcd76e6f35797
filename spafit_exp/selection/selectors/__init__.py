"""Selector registry (subset paper, section 3.1): a selector returns the flat indices (over the candidate
tensors, see masking.FlatParams) of the k elements a fixed-subset run may train. The selection stage
(spafit_exp/selection/stage.py) sizes the subset and calls the selector (with the pre-tuned decoder in place, see
`decoder.pretune`); the subset method consumes the result.

Adding a selector = a module in this package with `@register(name, options=...)` + a YAML in conf/selector/
(`defaults: [_base]` gives the shared keys) + a test. Its typed options are checked before any weights load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import MISSING
from torch import nn

from spafit_exp.core.registry import Registry, discover, typed_options
from spafit_exp.core.spec import RunSpec
from spafit_exp.inputs.data import stage_seed as shared_stage_seed
from spafit_exp.methods import Selection
from spafit_exp.methods.subnetwork import check_size_options
from spafit_exp.ops.masking import FlatParams


@dataclass
class SelectorOptions:
    """Keys every selector YAML has (conf/selector/_base.yaml); a selector with options subclasses this."""

    name: str = MISSING
    tag: str = MISSING  # run-directory component: method.tag = subset-<tag>
    lr: Optional[float] = MISSING  # recommended rate of method=subset with this selector
    k: Optional[int] = MISSING  # subset size; null = fraction, or the model's BitFit size
    fraction: Optional[float] = MISSING


@dataclass
class Context:
    """What a selector may use: the run's spec (the data and model its statistics read, the seeds and cache keys),
    its own typed options, the model (pre-tuned head loaded), the candidates, the target size and the pre-tuned
    decoder's cache key (statistics depend on the head)."""

    spec: RunSpec
    options: Any
    model: nn.Module
    flat: FlatParams
    k: int
    decoder_key: str

    @property
    def stage_seed(self) -> int:
        """The seed a selector's own computations draw from and are cached under (data.py `stage_seed`): shared by
        the repetitions when the head is the shared pre-tuned decoder; the run's own when no decoder was pre-tuned,
        since the head is then the run seed's initialisation."""
        return shared_stage_seed(self.spec) if self.decoder_key != "none" else int(self.spec.trainer.seed)

    def picked(self, index: torch.Tensor, info: dict | None = None, **implied) -> Selection:
        """A selector's answer as the `Selection` the subset method consumes: its indices over `flat`, facts for
        the record (`info`; an `info["k"]` overrides the target size when the selector picks another), and
        (`implied`: head, delta, evaluate_only) the model it implies (diff pruning without retraining)."""
        return Selection(index=index, k=int((info or {}).get("k", self.k)), n=self.flat.n, info=dict(info or {}),
                         **implied)

    @property
    def decoder_id(self) -> str:
        """The pre-tuned decoder's file name, its own cache key: what a statistic's key holds, so that it does not
        depend on where the cache is."""
        return Path(self.decoder_key).name


@dataclass(frozen=True)
class SelectorSpec:
    name: str
    select: Callable[[Context], Selection]
    options: type = SelectorOptions
    validate: Callable[[Any], None] | None = None


SELECTORS: Registry[SelectorSpec] = Registry("selector")


def register(name: str, options: type = SelectorOptions, validate: Callable[[Any], None] | None = None):
    def decorate(fn: Callable[[Context], Selection]):
        SELECTORS.add(name, SelectorSpec(name, fn, options, validate))
        return fn

    return decorate


def selector_options(node: Mapping[str, Any]) -> Any:
    """The selector's config node (`selector.*`) as its typed options (ConfigError naming the key on a bad one):
    parsed once, when the run's spec is resolved (run/spec.py)."""
    return typed_options(SELECTORS.get(node["name"]).options, node, "selector")


def validate_selector(options: SelectorOptions) -> None:
    """Sizes, then the selector's own checks on its typed options; before any weights load."""
    spec = SELECTORS.get(options.name)
    check_size_options(options.k, options.fraction, "selector")
    if spec.validate is not None:
        spec.validate(options)


discover(__name__, __path__)
