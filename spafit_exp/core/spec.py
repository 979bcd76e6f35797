"""A run's settings, typed and frozen: `RunSpec`, resolved once from the composed config after validation
(spafit_exp/run/spec.py: `resolve`) and handed down in pieces — the loop gets the spec, the data pipeline the task
and data specs, a method its typed options — so no layer below the run reads an untyped config. A sub-run (decoder
pre-tuning, diff pruning's fine-tune, the transfer study) is `dataclasses.replace` of its parent's spec.

The specs hold fields and types only: the values live once, in the YAML, and the Hydra schema of the typed groups
(run/schema.py) is derived from these classes. Values are kept as the config resolved them (lists become tuples,
mappings read-only dicts), so a cache key or a fingerprint computed from a spec equals the one the config gave."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional, get_args, get_type_hints

from spafit_exp.core.errors import ConfigError

RESOLVED = {"resolved": True}  # field metadata: set when the spec is resolved, not a config key (no schema field)


class Frozen(dict):
    """A read-only dict (a spec's mappings: model.arch, task.files, a study's settings); JSON and pickle as a dict."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a spec is frozen: build a changed one with dataclasses.replace")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):
        return Frozen, (dict(self),)


def freeze(value):
    """Mappings -> Frozen, sequences -> tuples, recursively; anything else as it is."""
    if isinstance(value, Mapping):
        return Frozen({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return tuple(freeze(v) for v in value)
    return value


def plain(value):
    """A spec (or any value in one) as the plain JSON-like tree the config had: dicts and lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value) if not f.metadata.get("resolved")}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


def _nested(hint) -> type | None:
    return next((c for c in (hint, *get_args(hint)) if is_dataclass(c)), None)


def build(cls: type, node: Mapping, where: str, stored: bool = False):
    """`cls` from a resolved config node (a mapping). A key the node lacks is a ConfigError naming it; with `stored`
    (a record's config, written by an older version that may lack keys added since) it reads as None."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where}={node}: must be a mapping of {', '.join(f.name for f in fields(cls))}")
    hints, values = get_type_hints(cls), {}
    for f in fields(cls):
        if f.metadata.get("resolved"):
            continue
        if f.name not in node:
            if not stored:
                raise ConfigError(f"{where}.{f.name}: missing")
            values[f.name] = None
            continue
        inner, value = _nested(hints[f.name]), node[f.name]
        values[f.name] = build(inner, value, f"{where}.{f.name}", stored) if inner and value is not None else freeze(value)
    return cls(**values)


@dataclass(frozen=True)
class TrainerSpec:
    lr: Optional[float]  # null only when the method recommends none (validation says so)
    epochs: int
    batch_size: int
    eval_batch_size: int
    max_len: int
    weight_decay: float
    adam_eps: float
    adam_betas: tuple[float, ...]
    warmup_ratio: float
    schedule: str
    max_grad_norm: Optional[float]
    grad_accum: int
    precision: str
    unpad: bool
    group_by_length: bool
    compile: bool
    seed: int
    eval_every_epoch: bool
    eval_every: Optional[int]  # optimizer steps between evaluations; null = per epoch (eval_every_epoch)
    early_stopping_patience: Optional[int]  # evaluations without a better dev main metric; null = off
    max_train_samples: Optional[int]
    max_eval_samples: Optional[int]
    eval_train_samples: int
    log_every: int
    detect_anomaly: bool
    dry_run: bool
    save_trainable: bool
    checkpoint_every: int


@dataclass(frozen=True)
class DecoderRecipe:
    """How a head is tuned alone on the frozen encoder: the `decoder.*` keys that make the head (a pre-tuned
    decoder's cache key holds them), or the transfer study's `study.decoder`."""

    epochs: int
    lr: float
    batch_size: int
    max_grad_norm: float
    warmup_ratio: float


@dataclass(frozen=True)
class DecoderSpec:
    """Decoder pre-tuning (subset paper, Appendix A Table 4): the head alone on the frozen encoder, before the
    method trains. pretune: null = for fixed-subset methods only, true = every method, false = never."""

    pretune: Optional[bool]
    stage_seed: str  # shared | run (spafit_exp/inputs/data.py: stage_seed)
    epochs: int
    lr: float
    batch_size: int
    max_grad_norm: float
    warmup_ratio: float

    @property
    def recipe(self) -> DecoderRecipe:
        return DecoderRecipe(**{f.name: getattr(self, f.name) for f in fields(DecoderRecipe)})


@dataclass(frozen=True)
class DataSpec:
    source: str
    dir: Optional[str]
    cache_dir: Optional[str]
    num_workers: int


@dataclass(frozen=True)
class RunOptions:
    root: str
    force: bool
    overrides: Optional[tuple[str, ...]]  # set by the run itself (spafit_exp/core/commands.py)
    resume: bool
    dir: str
    # the recipe's fingerprint (core/fingerprint.py), of the resolved config: what the record and a resume carry
    fingerprint: Optional[Mapping[str, Any]] = field(default=None, metadata=RESOLVED)


@dataclass(frozen=True)
class TrackingSpec:
    mode: str
    project: str
    entity: Optional[str]
    group: str
    run_name: str


@dataclass(frozen=True)
class HubSpec:
    path: str
    name: Optional[str]
    text_fields: tuple[str, ...]
    label_field: str
    splits: Mapping[str, str]  # split -> the hub's split name (open: a task may have more splits)


@dataclass(frozen=True)
class HoldoutSpec:
    fraction: float
    seed: int


@dataclass(frozen=True)
class SizeSpec:
    """What the sweep planner's time estimate assumes of a task until finished runs measure it."""

    train_rows: int
    tokens_per_row: float


@dataclass(frozen=True)
class TaskSpec:
    name: str
    display: str
    type: str
    reader: str
    folders: tuple[str, ...]
    files: Mapping[str, str]  # split -> file name (open)
    header: bool
    columns: Optional[tuple[str, ...]]
    text_fields: tuple[str, ...]
    label_field: str
    labels: Optional[tuple[str, ...]]
    num_labels: int
    metrics: tuple[str, ...]
    main_metric: str
    report: str
    dev_holdout: Optional[HoldoutSpec]
    batch_size: int
    hub: HubSpec
    size: Optional[SizeSpec]  # null: sweep estimates assume a mid-sized task; no run reads it (sweep/estimates.py)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    hub_id: Optional[str]
    path: Optional[str]
    tokenizer: Optional[str]
    init: str
    trust_remote_code: bool  # None in records written before the key (core/fingerprint.py: INTRODUCED_AT)
    head: str  # None in records written before the key: transformers' head (inputs/heads.py: head_of)
    arch: Mapping[str, Any]  # keyword arguments of the family's transformers config (validation checks their names)


def stored_specs(config: Mapping[str, Any]) -> tuple[ModelSpec, TaskSpec]:
    """The model and task specs of a record's config (a finished run's: its reload, its export, a study's source)."""
    return build(ModelSpec, config["model"], "model", stored=True), build(TaskSpec, config["task"], "task", stored=True)


@dataclass(frozen=True)
class StudySpec:
    """`study.*`: the study's name and its own keys as its YAML names them (studies have no typed schema; the
    names are checked by run/config.py)."""

    name: str
    settings: Mapping[str, Any] = field(default_factory=Frozen)

    def __getitem__(self, key: str):
        return self.settings[key]

    def get(self, key: str, default=None):
        return self.settings.get(key, default)


@dataclass(frozen=True)
class RunSpec:
    experiment_name: str
    task: TaskSpec
    model: ModelSpec
    trainer: TrainerSpec
    method: Any  # the method's typed options (methods.MethodOptions or its subclass)
    selector: Any  # the selector's typed options (selection.selectors.SelectorOptions ...); None: selector=none
    data: DataSpec
    decoder: DecoderSpec
    run: RunOptions
    tracking: TrackingSpec
    study: StudySpec
    # The resolved config tree the spec was resolved from: what the record and the tracker keep, the fingerprint's
    # source. A sub-run built with `replace` keeps its parent's: only the transfer study writes a record of one.
    config: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def selector_name(self) -> str:
        return "none" if self.selector is None else self.selector.name
