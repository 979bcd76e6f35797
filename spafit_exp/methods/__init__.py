"""Method registry. A method decides which parameters train and may add a hook run between `backward()` and
`optimizer.step()`. Adding one = a module in this package (`@register(name, options=...)`) + a YAML in
conf/method/ + a test; its typed options are checked before any weights load.

A fixed-subset method does not choose its subset: the selection stage (spafit_exp/selection/stage.py) runs first and
hands it a `Selection` (indices, head tensors); the method only consumes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from omegaconf import MISSING
from torch import nn

from spafit_exp.core.registry import Registry, discover, typed_options
from spafit_exp.ops.masking import FlatParams, candidate_params


@dataclass
class MethodOptions:
    """Keys every method YAML has; a method with options subclasses this (types only: values live in the YAML)."""

    name: str = MISSING
    tag: str = MISSING
    lr: Optional[float] = MISSING  # the recommended rate: trainer.lr's default


@dataclass
class Selection:
    """What the selection stage hands a fixed-subset method: which candidate elements train, and the tensors
    the model starts from. `index` is None on the meta device (dry runs: sizes only)."""

    index: torch.Tensor | None  # flat indices over masking.candidate_params(model, candidates)
    k: int
    n: int
    head: dict[str, torch.Tensor] = field(default_factory=dict)  # loaded into the head (pre-tuned decoder)
    delta: torch.Tensor | None = None  # values added at `index` before training (diff pruning, no retraining)
    evaluate_only: bool = False  # the prepared model is the result
    info: dict = field(default_factory=dict)  # facts for results.json

    @classmethod
    def from_sparse_state(cls, model: nn.Module, candidates: str, state: dict[str, torch.Tensor]) -> "Selection":
        """The Selection a saved sparse state (`<name>.__idx` / `.__val`, see methods/subset.py) was trained on:
        a finished run reloads from its own artefacts, never by selecting again. The reloaded model is the result
        (`evaluate_only`): no training machinery is installed, so its tensors are exactly the model's own."""
        flat = FlatParams(candidate_params(model, candidates))
        start = dict(zip(flat.names, flat.offsets[:-1]))
        parts = [idx.long() + start[name[: -len(".__idx")]] for name, idx in state.items() if name.endswith(".__idx")]
        index = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
        return cls(index=index, k=int(index.numel()), n=flat.n, evaluate_only=True, info={"reloaded": True})


@dataclass
class Prepared:
    """What the loop needs from a method."""

    model: nn.Module
    before_step: Callable[[], None] | None = None  # called on every optimizer step, after clipping
    after_step: Callable[[], None] | None = None  # called after every optimizer step (e.g. a projection)
    info: dict = field(default_factory=dict)  # extra facts for results.json (e.g. k, n, fraction)
    # Builds the optimizer from (model, trainer spec) when plain AdamW over the trainable tensors is not the
    # method's maths (e.g. masked updates that must leave unselected elements and their moments untouched).
    make_optimizer: Callable[[nn.Module, Any], "torch.optim.Optimizer"] | None = None
    evaluate_only: bool = False  # the method's result is the model as prepared (e.g. diff pruning without retraining)
    # What to save of a trained model (default: every trainable tensor); sparse for fixed subsets.
    export_state: Callable[[nn.Module], dict] | None = None
    # Method-owned state that a resume checkpoint must carry (e.g. a sampler's generator): an object with
    # state_dict() / load_state_dict(state), saved next to the optimizer's.
    method_state: object | None = None
    # Told the run's total optimizer steps before training (methods whose schedule is a fraction of the run).
    on_schedule: Callable[[int], None] | None = None
    # Facts about the trained model for results.json's method_info, from the best epoch's trainable tensors
    # (name -> CPU tensor), e.g. how far the encoder moved from its pre-trained weights.
    summarize: Callable[[dict[str, torch.Tensor]], dict] | None = None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    apply: Callable[..., Prepared]
    options: type = MethodOptions
    validate: Callable[[Any, int], None] | None = None  # (typed options, number of layers), before weights load
    needs_selection: bool = False  # apply(model, options, selection): fixed-subset methods


METHODS: Registry[MethodSpec] = Registry("method")


def register(name: str, options: type = MethodOptions, validate: Callable[[Any, int], None] | None = None,
             needs_selection: bool = False):
    def decorate(fn: Callable[..., Prepared]):
        METHODS.add(name, MethodSpec(name, fn, options, validate, needs_selection))
        return fn

    return decorate


def available() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)


def method_options(node: Mapping[str, Any]) -> Any:
    """The method's config node (`method.*`) as its typed options (ConfigError naming the key on a bad one): parsed
    once, when the run's spec is resolved (run/spec.py), or from a stored record's config (`load_run`)."""
    return typed_options(get_method(node["name"]).options, node, "method")


def validate_method(options: MethodOptions, num_layers: int) -> None:
    spec = get_method(options.name)
    if spec.validate is not None:
        spec.validate(options, num_layers)


def apply_method(model: nn.Module, options: MethodOptions, selection: Selection | None = None) -> Prepared:
    """`options`: the method's typed options (`method_options`), as the run's spec holds them."""
    spec = get_method(options.name)
    if not isinstance(options, spec.options):
        raise TypeError(f"method {spec.name}: expects its typed options {spec.options.__name__} (method_options), "
                        f"got {type(options).__name__}")
    if not spec.needs_selection:
        return spec.apply(model, options)
    if selection is None:
        raise ValueError(f"method {spec.name} trains a fixed subset: run the selection stage first")
    return spec.apply(model, options, selection)


discover(__name__, __path__)
