"""Method registry. A method decides which parameters train and may add a hook run between
`backward()` and `optimizer.step()`. Adding one = a module in this package + a YAML in conf/method/."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from spafit_exp.config import ConfigError


@dataclass
class Prepared:
    """What the loop needs from a method."""

    model: nn.Module
    before_step: Callable[[], None] | None = None  # called on every optimizer step, after clipping
    info: dict = field(default_factory=dict)  # extra facts for results.json (e.g. k, n, fraction)
    # Builds the optimizer from (model, trainer cfg) when plain AdamW over the trainable tensors is not the
    # method's maths (e.g. masked updates that must leave unselected elements and their moments untouched).
    make_optimizer: Callable[[nn.Module, DictConfig], "torch.optim.Optimizer"] | None = None
    evaluate_only: bool = False  # the method's result is the model as prepared (e.g. diff pruning without retraining)
    # What to save of a trained model (default: every trainable tensor); sparse for fixed subsets.
    export_state: Callable[[nn.Module], dict] | None = None
    # Method-owned state that a resume checkpoint must carry (e.g. a sampler's generator): an object with
    # state_dict() / load_state_dict(state), saved next to the optimizer's.
    method_state: object | None = None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    apply: Callable[..., Prepared]
    validate: Callable[[DictConfig, int], None] | None = None  # (method cfg, number of layers), before weights load
    needs_run: bool = False  # apply(model, method_cfg, run_cfg): methods that need data (subset selection)


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, validate: Callable[[DictConfig, int], None] | None = None, needs_run: bool = False):
    def decorate(fn: Callable[..., Prepared]):
        if name in _REGISTRY:
            raise RuntimeError(f"method {name!r} registered twice")
        _REGISTRY[name] = MethodSpec(name, fn, validate, needs_run)
        return fn

    return decorate


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def available() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    if name not in _REGISTRY:
        raise ConfigError(f"method.name={name}: unknown method; registered: {', '.join(available())}")
    return _REGISTRY[name]


def apply_method(model: nn.Module, method_cfg: DictConfig, run_cfg: DictConfig | None = None) -> Prepared:
    spec = get_method(method_cfg.name)
    if not spec.needs_run:
        return spec.apply(model, method_cfg)
    if run_cfg is None:
        raise ValueError(f"method {spec.name} needs the run config (data, selector, seed)")
    return spec.apply(model, method_cfg, run_cfg)


_discover()
