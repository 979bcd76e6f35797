"""A run directory means one configuration. The fingerprint of a run is a hash over the resolved settings that
change its maths — everything except where outputs go, how they are tracked or launched, and how often the loop
logs or checkpoints (IGNORED, the one list). Skip-if-done, resume and `make tables` compare fingerprints, so a
recipe edited half-way through a sweep is never mixed with the old one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Prefixes (dotted keys) that do not change what a run computes.
IGNORED = (
    "run", "hydra", "tracking", "launcher", "lr_grid", "study", "experiment_name",
    "task.size",  # the sweep planner's estimate of the task's size, not what a run reads
    "data.cache_dir", "data.num_workers",
    "trainer.log_every", "trainer.checkpoint_every", "trainer.save_trainable", "trainer.dry_run",
    "trainer.detect_anomaly", "trainer.eval_batch_size",
)


# Keys added after records existed, with the value that reproduces what runs did before them. A setting at that
# value is left out of the fingerprint, so a finished run of an older version is still recognised (skipped, resumed,
# averaged in one table cell) instead of refused as "model.head <unset> → default".
INTRODUCED_AT = {"model.head": "default", "model.trust_remote_code": False, "trainer.eval_every": None,
                 "trainer.early_stopping_patience": None}


def _flatten(value, prefix: str, out: dict) -> dict:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def _ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in IGNORED)


def settings(config: Mapping[str, Any]) -> dict:
    """The maths-relevant settings of a config (composed, or its resolved tree) as {dotted key: value}, sorted."""
    tree = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
    flat = _flatten(tree, "", {})
    return {k: flat[k] for k in sorted(flat)
            if not _ignored(k) and not (k in INTRODUCED_AT and flat[k] == INTRODUCED_AT[k])}


def digest(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def of(config: Mapping[str, Any]) -> dict:
    """{"hash": ..., "settings": {...}}: what a record and a resume checkpoint carry. A run's is computed once, when
    its spec is resolved (run/spec.py)."""
    values = settings(config)
    return {"hash": digest(values), "settings": values}


def differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(key, old value, new value) for every setting that differs; a missing key reads as <unset>."""
    keys = sorted(set(old) | set(new))
    missing = "<unset>"
    return [(k, old.get(k, missing), new.get(k, missing)) for k in keys if old.get(k, missing) != new.get(k, missing)]


def describe(diffs: list[tuple[str, object, object]], limit: int = 6) -> str:
    """`trainer.epochs 1 → 2, trainer.max_train_samples 32 → 64`."""
    text = ", ".join(f"{k} {a} → {b}" for k, a, b in diffs[:limit])
    return text + (f", … ({len(diffs) - limit} more)" if len(diffs) > limit else "")


# What may differ between the runs of one table cell: the learning-rate grid and the seeds.
VARIES_IN_CELL = ("trainer.lr", "trainer.seed", "method.seed")


def recipe(settings_of_run: dict) -> dict:
    """A run's settings without what varies inside a table cell: equal for every run a cell may average."""
    return {k: v for k, v in settings_of_run.items() if k not in VARIES_IN_CELL}
