"""Whole-run validation, before any weights or data load: method and selector (each registered one checks its own
typed options), trainer, task, model, data and output settings, and whether the Hugging Face hub is needed and
reachable. Every violation is one line naming the key."""

from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path

from omegaconf import DictConfig

from spafit_exp.core.errors import ConfigError
from spafit_exp.core.results import require_writable_root
from spafit_exp.core.spec import ModelSpec, RunSpec
from spafit_exp.engine.tracking import check_tracking
from spafit_exp.inputs.data import STAGE_SEEDS
from spafit_exp.inputs.heads import HEADS, head_of
from spafit_exp.inputs.readers import check_data_files
from spafit_exp.methods import get_method, validate_method
from spafit_exp.run.config import check_keys, check_run_dir
from spafit_exp.run.schema import unknown_key
from spafit_exp.run.spec import resolve
from spafit_exp.selection.selectors import SELECTORS, SelectorOptions, validate_selector

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("linear", "constant")
TRACKING_MODES = ("disabled", "offline", "online")
# The metrics each task type can compute (names as in metrics.METRICS); f1 is binary only.
TASK_METRICS = {"classification": ("accuracy", "f1", "mcc"), "regression": ("pearson", "spearman"),
                "token_classification": ("entity_f1",)}
HUB_HOST = ("huggingface.co", 443)
# The architecture fields every model YAML sets; any other model.arch key must name a transformers config field.
ARCH_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
             "max_position_embeddings", "type_vocab_size")


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: must be {allowed}")


def validate(cfg: DictConfig) -> RunSpec:
    """Cross-field checks on the composed config. Raises ConfigError on the first violation; returns the run's spec
    (resolved here, once: the method's and the selector's options parsed into their typed options)."""
    check_keys(cfg)  # a `+key` no schema has (the CLI checked its first job already; sweep jobs and scripts here)
    check_run_dir(cfg, writable=False)  # dry runs and studies too: no folder name may lead out of run.root
    spec = resolve(cfg)
    _check_method(cfg, spec)
    _check_trainer(cfg)
    _check_task(cfg.task)
    _check_model(cfg, spec.model)
    _require(cfg.data.source in ("local", "hub"), "data.source", cfg.data.source, "local or hub")
    _require(cfg.decoder.stage_seed in STAGE_SEEDS, "decoder.stage_seed", cfg.decoder.stage_seed,
             f"one of {', '.join(STAGE_SEEDS)}")
    _require(cfg.data.num_workers >= 0, "data.num_workers", cfg.data.num_workers, "an integer >= 0")
    _require(cfg.tracking.mode in TRACKING_MODES, "tracking.mode", cfg.tracking.mode, f"one of {', '.join(TRACKING_MODES)}")
    if not trainer_is_dry(cfg):
        check_data_files(spec.data, spec.task)
        require_writable_root(cfg.run.root)
        check_run_dir(cfg, writable=True)  # a read-only experiment folder, named before the run creates anything
        _check_hub(cfg)
        if cfg.study.name == "none":  # studies log no training
            check_tracking(spec.tracking)
    return spec


def check_swept_paths(argv: list[str]) -> None:
    """Hydra creates each sweep job's run directory before the job starts, so every swept value that could name
    a folder of one is checked before the first job (the CLI checks the first job's whole config itself). Only
    string values of plain keys can: config groups name existing files and numbers are safe; each such value is
    composed once, the other swept keys at their first value, and its run.dir checked."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from spafit_exp.run.config import GROUPS, check_overrides_compose

    args = [a for a in argv if not a.startswith("-") and "=" in a and not a.lstrip("+~").startswith("hydra")]
    for i, override in enumerate(OverridesParser.create().parse_overrides(args)):
        if not override.is_sweep_override() or override.key_or_group in GROUPS:
            continue
        for value in list(override.sweep_string_iterator())[1:]:
            try:
                float(value)
            except ValueError:
                quote = "'" if "'" not in value else '"'  # quoted: any string parses as one value
                line = f"{override.input_line.partition('=')[0]}={quote}{value}{quote}"
                check_run_dir(check_overrides_compose([*args[:i], line, *args[i + 1:]]), writable=False)


def _check_method(cfg: DictConfig, spec: RunSpec) -> None:
    validate_method(spec.method, cfg.model.arch.num_hidden_layers)  # ranges of the typed options resolve parsed
    needs_selection = get_method(cfg.method.name).needs_selection
    if needs_selection and cfg.selector.name == "none":
        raise ConfigError(f"method={cfg.method.name} trains a selected subset: choose selector="
                          f"{'|'.join(SELECTORS.names())}")
    if cfg.selector.name != "none":
        if not needs_selection:
            raise ConfigError(f"selector={cfg.selector.tag}: only method=subset uses a selector; method="
                              f"{cfg.method.name} would ignore it (drop selector= or use method=subset)")
        validate_selector(spec.selector)
    else:  # not validated as a selector's options: its keys still must be the shared ones (a preset may set them)
        error = unknown_key(cfg.selector, SelectorOptions, "selector")
        if error is not None:
            raise error


def _check_trainer(cfg: DictConfig) -> None:
    t = cfg.trainer
    if t.lr is None:  # trainer.lr defaults to method.lr; method=subset takes it from its selector
        raise ConfigError(f"trainer.lr: not set and method={cfg.method.name} selector={cfg.selector.name} recommends "
                          "no rate (method.lr); choose a selector or set trainer.lr=...")
    _require(isinstance(t.lr, (int, float)) and t.lr > 0, "trainer.lr", t.lr, "a number > 0")
    for key in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "log_every"):
        value = t[key]
        _require(isinstance(value, int) and value >= 1, f"trainer.{key}", value, "an integer >= 1")
    _require(isinstance(t.max_len, int) and 8 <= t.max_len <= cfg.model.arch.max_position_embeddings - 2,
             "trainer.max_len", t.max_len, f"an integer in [8, {cfg.model.arch.max_position_embeddings - 2}]")
    _require(0 <= t.warmup_ratio < 1, "trainer.warmup_ratio", t.warmup_ratio, "in [0, 1)")
    _require(t.weight_decay >= 0, "trainer.weight_decay", t.weight_decay, ">= 0")
    _require(t.adam_eps > 0, "trainer.adam_eps", t.adam_eps, "> 0")
    betas = list(t.adam_betas)
    _require(len(betas) == 2 and all(0 <= b < 1 for b in betas), "trainer.adam_betas", betas, "two numbers in [0, 1)")
    _require(t.max_grad_norm is None or t.max_grad_norm > 0, "trainer.max_grad_norm", t.max_grad_norm, "null or > 0")
    _require(t.precision in PRECISIONS, "trainer.precision", t.precision, f"one of {', '.join(PRECISIONS)}")
    _require(t.schedule in SCHEDULES, "trainer.schedule", t.schedule, f"one of {', '.join(SCHEDULES)}")
    _require(t.eval_train_samples >= 0, "trainer.eval_train_samples", t.eval_train_samples, "an integer >= 0")
    _require(t.checkpoint_every >= 0, "trainer.checkpoint_every", t.checkpoint_every, "an integer >= 0 (0: epochs only)")
    for key in ("max_train_samples", "max_eval_samples", "eval_every", "early_stopping_patience"):
        value = t.get(key)
        _require(value is None or value >= 1, f"trainer.{key}", value, "null or an integer >= 1")


def _check_task(task: DictConfig) -> None:
    size = task.get("size")  # optional: what sweep estimates assume before a finished run measures the task
    if size is not None:
        _require(isinstance(size, DictConfig), "task.size", size, "a mapping {train_rows, tokens_per_row}")
        rows, per_row = size.get("train_rows"), size.get("tokens_per_row")
        _require(isinstance(rows, int) and not isinstance(rows, bool) and rows >= 1, "task.size.train_rows", rows,
                 "an integer >= 1")
        _require(isinstance(per_row, (int, float)) and not isinstance(per_row, bool) and per_row > 0,
                 "task.size.tokens_per_row", per_row, "a number > 0")
    allowed = TASK_METRICS.get(task.type)
    _require(allowed is not None, "task.type", task.type, f"one of {', '.join(TASK_METRICS)}")
    if task.type == "regression":
        _require(task.num_labels == 1, "task.num_labels", task.num_labels, "1 for a regression task")
    else:
        _require(isinstance(task.num_labels, int) and task.num_labels >= 2, "task.num_labels", task.num_labels,
                 "an integer >= 2 for a classification task")
        if task.labels is not None:
            _require(len(task.labels) == task.num_labels, "task.num_labels", task.num_labels,
                     f"the number of task.labels ({len(task.labels)})")
    metrics = list(task.metrics)
    for name in metrics:
        _require(name in allowed, "task.metrics", metrics, f"among {', '.join(allowed)} for a {task.type} task")
    if "f1" in metrics:
        _require(task.num_labels == 2, "task.metrics", metrics, "without f1 unless the task is binary")
    _require(task.main_metric in metrics, "task.main_metric", task.main_metric,
             f"one of the metrics computed (task.metrics={metrics})")


def _check_model(cfg: DictConfig, model: ModelSpec) -> None:
    m, arch = cfg.model, cfg.model.arch
    _require(m.family in ("bert", "roberta"), "model.family", m.family, "bert or roberta")
    _require(m.init in ("pretrained", "random"), "model.init", m.init, "pretrained or random")
    _require(head_of(model) in HEADS, "model.head", m.get("head"), " or ".join(HEADS))
    _require(isinstance(m.get("trust_remote_code", False), bool), "model.trust_remote_code", m.get("trust_remote_code"),
             "true or false")
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"):
        _require(isinstance(arch[key], int) and arch[key] >= 1, f"model.arch.{key}", arch[key], "an integer >= 1")
    _require(arch.hidden_size % arch.num_attention_heads == 0, "model.arch.hidden_size", arch.hidden_size,
             f"a multiple of model.arch.num_attention_heads ({arch.num_attention_heads})")
    extra = [str(k) for k in arch if k not in ARCH_KEYS]
    if extra:  # keyword arguments of the family's transformers config, which takes any name silently
        from transformers import BertConfig, RobertaConfig

        known = sorted(set((BertConfig if m.family == "bert" else RobertaConfig)().to_dict()) | set(ARCH_KEYS))
        for key in extra:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                raise ConfigError(f"model.arch.{key}: no such {m.family} config field"
                                  + (f"; did you mean model.arch.{close[0]}?" if close else ""))
    if m.path and not str(m.path).startswith("pkg:") and not trainer_is_dry(cfg):
        _require(Path(m.path).expanduser().exists(), "model.path", m.path, "an existing directory")


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connection attempt, instead of the libraries' 30-50 s of retries when there is no network."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def _model_cached(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)


def _check_hub(cfg: DictConfig) -> None:
    """Fail in one line, before anything loads, when a run needs the hub and the hub cannot be reached."""
    needs = []
    if cfg.model.init == "pretrained" and not cfg.model.path and not _model_cached(cfg.model.hub_id):
        needs.append(f"model={cfg.model.name} (hub id {cfg.model.hub_id}; or model.path=/local/checkpoint)")
    if cfg.data.source == "hub":
        needs.append("data.source=hub (or data.source=local data.dir=/path/to/glue_data)")
    if needs and not hub_reachable():
        raise ConfigError(f"the Hugging Face hub is not reachable (offline?) and this run needs it for "
                          f"{'; '.join(needs)}")


def trainer_is_dry(cfg: DictConfig) -> bool:
    return bool(cfg.trainer.dry_run)
