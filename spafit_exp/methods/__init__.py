"""Method registry. A method decides which parameters train and returns a `Method` (methods/protocol.py: optimizer,
hooks around the optimizer step, resume state, what to save, typed trainable counts). Adding one = a module in this
package (`@register(name, options=...)`) + a YAML in conf/method/ + a test; its typed options are checked before
any weights load.

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
from spafit_exp.methods.protocol import Method, ParamCounts  # noqa: F401 - the protocol's names for every caller
from spafit_exp.ops.masking import FlatParams, candidate_params


@dataclass
class MethodOptions:
    """Keys every method YAML has; a method with options subclasses this (types only: values live in the YAML)."""

    name: str = MISSING
    tag: str = MISSING
    lr: Optional[float] = MISSING  # the recommended rate: trainer.lr's default


@dataclass
class Selection:
    """What a selector answers (`Context.picked`) and the selection stage hands a fixed-subset method, with the
    stage's facts added to `info`: which candidate elements train, and the tensors the model starts from. `index`
    is None on the meta device (dry runs: sizes only)."""

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


@dataclass(frozen=True)
class MethodSpec:
    name: str
    apply: Callable[..., Method]
    options: type = MethodOptions
    validate: Callable[[Any, int], None] | None = None  # (typed options, number of layers), before weights load
    needs_selection: bool = False  # apply(model, options, selection): fixed-subset methods


METHODS: Registry[MethodSpec] = Registry("method")


def register(name: str, options: type = MethodOptions, validate: Callable[[Any, int], None] | None = None,
             needs_selection: bool = False):
    def decorate(fn: Callable[..., Method]):
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


def apply_method(model: nn.Module, options: MethodOptions, selection: Selection | None = None) -> Method:
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
