"""The one registry idiom for everything a user extends (methods, selectors, studies, table layouts): a module
in the extension's package registers an entry under a name; the package discovers its modules on import, so
adding one is a file (+ a YAML in conf/ + a test), never an edit of a central list.

Options are typed: an entry may name a dataclass whose fields are the keys its YAML may set (types only, the
values live once, in the YAML). `typed_options` checks a config node against it before any weights load and
turns a misspelt key, a wrong type or a missing value into one line naming the key."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from spafit_exp.core.errors import ConfigError

T = TypeVar("T")

@dataclass
class Registry(Generic[T]):
    kind: str  # "method", "selector", ...: the config key that names an entry
    entries: dict[str, T] = field(default_factory=dict)

    def add(self, name: str, entry: T) -> None:
        if name in self.entries:
            raise RuntimeError(f"{self.kind} {name!r} registered twice")
        self.entries[name] = entry

    def get(self, name: str) -> T:
        if name not in self.entries:
            raise ConfigError(f"{self.kind}.name={name}: unknown {self.kind}; registered: {', '.join(self.names())}")
        return self.entries[name]

    def names(self) -> list[str]:
        return sorted(self.entries)

def discover(package_name: str, package_path) -> None:
    """Import every module of an extension package, so each registers itself."""
    for module in pkgutil.iter_modules(package_path):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package_name}.{module.name}")

def typed_options(schema: type | None, node: Mapping[str, Any], key: str) -> Any:
    """`node` (a config node: the one place options are parsed, when a run's spec is resolved) checked against the
    dataclass `schema` and returned as an instance of it. Without a schema (or given an instance already) the node
    is returned as is."""
    if schema is None or isinstance(node, schema):
        return node
    try:
        if isinstance(node, DictConfig):  # resolved in place: a detached node loses its interpolations' root
            node = OmegaConf.to_container(node, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        where = f"{key}.{err.full_key}" if getattr(err, "full_key", None) else key
        allowed = ", ".join(f.name for f in fields(schema))
        reason = str(err).splitlines()[0]
        if "Key" in reason and "not in" in reason:
            reason = f"not an option here; options: {allowed}"
        raise ConfigError(f"{where}: {reason}") from None

def dataclass_fields(schema: type) -> list[str]:
    return [f.name for f in fields(schema)]

