"""Weights & Biases tracking (tracking=offline|wandb): the mode a run logs in, and a check, before anything loads,
that the run can start in it: one line (exit 2) instead of a traceback after the model and data loaded that left
the record `running`. Nothing here contacts the network: an online run needs an API key at hand, as `wandb.init`
looks for one (WANDB_API_KEY, an identity token file, the netrc entry of the W&B host, wandb's settings file)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from spafit_exp.core.errors import ConfigError
from spafit_exp.core.spec import RunSpec, TrackingSpec, plain

WANDB_MODES = ("online", "offline", "disabled", "dryrun", "shared", "run")  # what wandb.init accepts
NEEDS_NO_LOGIN = ("offline", "dryrun", "disabled")


def wandb_mode(tracking: TrackingSpec) -> str:
    """tracking.mode, unless tracking is on and WANDB_MODE is set: then WANDB_MODE. (wandb.init's own `mode=` would
    override the variable, yet `WANDB_MODE=offline` is how a node without network is told to log locally.)"""
    env = os.environ.get("WANDB_MODE", "").strip()
    return env if env and tracking.mode != "disabled" else str(tracking.mode)


def start_tracking(accelerator, spec: RunSpec, directory: Path) -> None:
    """accelerate's W&B tracker, in `wandb_mode`; its local files under the run directory (`wandb/`). The run's
    resolved config is its W&B config."""
    tracking = spec.tracking
    if tracking.mode == "disabled":
        return
    mode = wandb_mode(tracking)
    if mode != tracking.mode and accelerator.is_main_process:
        print(f"tracking: WANDB_MODE={mode} overrides tracking.mode={tracking.mode}", file=sys.stderr)
    accelerator.init_trackers(
        tracking.project,
        config=plain(spec.config),
        init_kwargs={"wandb": {"mode": mode, "group": tracking.group, "name": tracking.run_name,
                               "entity": tracking.entity, "dir": str(directory)}},
    )


def summary_values(record: dict) -> dict:
    """What a W&B run's summary shows (its runs table, its overview): the best evaluation — the one the record and
    the tables use, not the last logged — under the same keys as the history (`dev/<metric>`, `test/<metric>`),
    its place (`best/epoch`, `best/step`), the reported split's scores (`reported/<metric>`: test for tasks that
    report their labelled test set, else dev), trainable parameters, throughput and the run's peak memory."""
    metrics, best = record.get("metrics") or {}, (record.get("metrics") or {}).get("best") or {}
    values = {"status": record.get("status")}
    values.update({f"params/{k}": v for k, v in (record.get("params") or {}).items()})
    if best:
        values.update({"best/epoch": best.get("epoch"), "best/step": best.get("step")})
        for split in ("dev", "test"):
            values.update({f"{split}/{k}": v for k, v in (best.get(split) or {}).items()})
        values.update({f"train_rows/{k}": v for k, v in (best.get("train") or {}).items()})
        reported = metrics.get("reported_split", "dev")
        values["reported_split"] = reported
        values.update({f"reported/{k}": v for k, v in (best.get(reported) or {}).items()})
    timing = record.get("timing") or {}
    values.update({f"perf/{k}": timing[k] for k in ("train_samples_per_s", "train_tokens_per_s", "train_steps_per_s",
                                                     "wall_s") if k in timing})
    memory = record.get("memory") or {}
    values.update({f"memory/{k}": v for k, v in memory.items()})
    if "early_stopped" in (record.get("train") or {}):
        values.update({"train/steps": record["train"]["steps"], "train/early_stopped": record["train"]["early_stopped"]})
    return {k: v for k, v in values.items() if v is not None}


def summarize(accelerator, tracking: TrackingSpec, record: dict) -> None:
    """Writes `summary_values(record)` into the W&B run's summary (the main process holds the run)."""
    if tracking.mode == "disabled" or not accelerator.is_main_process:
        return
    run = accelerator.get_tracker("wandb", unwrap=True)
    if not hasattr(run, "summary"):  # a blank tracker
        return
    if record.get("status") != "running":
        # wandb holds the last logged step's row until the next step or finish, whose flush would then overwrite
        # these summary keys with the last evaluation's scores: commit it first
        run.log({}, commit=True)
    run.summary.update(summary_values(record))


def check_tracking(tracking: TrackingSpec) -> None:
    """ConfigError naming the setting when the run could not start its tracker."""
    if tracking.mode == "disabled":
        return
    env = os.environ.get("WANDB_MODE")
    if env is not None and env.strip() not in WANDB_MODES:  # wandb.init would refuse it
        raise ConfigError(f"WANDB_MODE={env!r}: must be one of {', '.join(WANDB_MODES)} (or unset)")
    mode = wandb_mode(tracking)
    try:
        import wandb  # noqa: F401 - accelerate's tracker needs it, offline too
    except ImportError:
        raise ConfigError(f"tracking.mode={tracking.mode}: needs the wandb package (pip install wandb); or "
                          "tracking=disabled") from None
    if mode in NEEDS_NO_LOGIN:
        return
    problem = _api_key_problem()
    if problem:
        raise ConfigError(f"tracking.mode={tracking.mode}: {problem}: run `wandb login` or set WANDB_API_KEY, "
                          "or log locally (tracking=offline, or WANDB_MODE=offline)")


def _api_key_problem() -> str | None:
    """Why wandb.init would find no usable API key, or None. wandb's own readers (not a public API): a version
    that lacks them gets no check rather than a wrong refusal."""
    if os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return None
    try:
        from wandb.errors import AuthenticationError
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth
    except ImportError:
        return None
    try:
        settings = wandb_setup.singleton().settings
        env_key = os.environ.get("WANDB_API_KEY")
        if env_key:
            wbauth.AuthApiKey(host=settings.base_url, api_key=env_key)  # raises on a malformed key
            return None
        if wbauth.read_netrc_auth(host=settings.base_url) or settings.api_key:
            return None
    except AuthenticationError as err:
        return f"unusable W&B API key ({str(err).strip().splitlines()[0]})"
    except ValueError as err:  # a settings file or WANDB_* variable wandb refuses (pydantic's error is a ValueError)
        return f"wandb cannot load its settings ({str(err).strip().splitlines()[0]})"
    except (AttributeError, TypeError):
        return None
    return f"no W&B API key for {settings.base_url} (WANDB_API_KEY, ~/.netrc or wandb's settings)"
