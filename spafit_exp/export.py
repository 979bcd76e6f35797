"""`python -m spafit_exp.export RUN_DIR --out DIR`: a finished run as a standard Hugging Face folder that
`AutoModelForSequenceClassification.from_pretrained(DIR)` (token tasks: `AutoModelForTokenClassification`) loads
with no code of ours: the run's best-epoch model with every trained delta (LoRA factors merged into their weights,
trained biases, a fixed subset's values, the head) in `model.safetensors`, the tokenizer (truncating at the run's
`trainer.max_len`), the task's label names in `config.json` (`entailment`, not `LABEL_0`) and `spafit_export.json`
(where it came from, its dev score). A LoRA run (`method=lora`) also gets the adapter alone, in peft's format, in
`DIR/adapter` (factors + head, for the run's own base model).

`model.head=linear` (Flair's one Linear on the first token, spafit_exp/inputs/heads.py) has no transformers class of its
own: it is mapped onto the standard head. The pooler (BERT) or the head's dense layer (RoBERTa) becomes 2^-20 times
the identity, on which tanh is the identity to float32 rounding (|tanh(y) - y| <= |y|^3/3), and the Linear's weight
is scaled by 2^20: the run's logits to float32 rounding. Load it in float32 or bfloat16 (float16 would overflow the
scaled weight).

Refused in one line (exit 2), before anything is written: a RUN_DIR that is no completed run with its trained
tensors, an --out that is a symbolic link, lies inside a run directory (this one or another: a folder holding a
results.json or a run.log) or is a file or a non-empty folder. The folder is written beside --out under a temp name
and renamed into place, so a failed export leaves nothing. Tensors are read with safetensors only (no pickle)."""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import shutil
import stat
import sys
from pathlib import Path

from omegaconf import OmegaConf

from spafit_exp.core import results
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.run_files import WriteFailed, exit_status
from spafit_exp.core.spec import ModelSpec, build, stored_specs

TRAINABLE_FILE = "trainable.safetensors"  # spafit_exp.engine.artefacts's, named here without importing torch
# What marks a run directory: its record, or the log every run opens first (console.RUN_LOG). Not `.lock` alone:
# pytest's and other tools' numbered folders hold one too.
RUN_MARKERS = (results.RESULTS, "run.log")
EXPORT_FILE = "spafit_export.json"
ADAPTER_DIR = "adapter"
LINEAR_SCALE = 2.0 ** 20  # a power of two: scaling by it and by its inverse is exact in floating point


def completed_run(run_dir: Path) -> dict:
    """The record of a completed run that kept its trained tensors; ConfigError naming what is missing."""
    directory = Path(run_dir)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no such run directory")
    try:
        record = results.read(directory)
    except results.CorruptRecord as err:
        raise ConfigError(str(err)) from None
    if record is None:
        raise ConfigError(f"{directory}: not a run directory (no {results.RESULTS})")
    if record.get("status") != "completed" or not isinstance(record.get("config"), dict):
        raise ConfigError(f"{directory}: the run is {record.get('status')!r}, not completed; finish it first "
                          "(rerun the same command: it resumes)")
    tensors = directory / TRAINABLE_FILE
    try:
        plain = stat.S_ISREG(os.lstat(tensors).st_mode)
    except FileNotFoundError:
        raise ConfigError(f"{tensors}: missing (the run ran with trainer.save_trainable=false); rerun it with "
                          "trainer.save_trainable=true run.force=true") from None
    if not plain:
        raise ConfigError(f"{tensors}: not a plain file (a link?); only a run's own tensors are read")
    return record


def check_out(out: Path, folder: bool = True) -> Path:
    """`out` if an export (a folder) or a predictions file may be written there; ConfigError otherwise."""
    out = Path(out)
    if os.path.islink(out):
        raise ConfigError(f"--out {out}: is a symbolic link; write to a real path (remove the link or choose another)")
    resolved = out.resolve()
    for above in [resolved, *resolved.parents]:
        if any(os.path.lexists(above / name) for name in RUN_MARKERS):
            raise ConfigError(f"--out {out}: is inside the run directory {above}, which holds only its run's own "
                              "files; choose a folder outside it")
    if folder and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder; choose a new folder")
    if not folder and out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name")
    return out


def label_names(task) -> list[str]:
    """Class names in class-index order: the task's label strings, else the class ids as GLUE writes them (`0`,
    `1`); a regression task's one output is named after its label field (`score`)."""
    if task.type == "regression":
        return [str(task.label_field)]
    if task.labels is not None:
        return [str(name) for name in task.labels]
    return [str(i) for i in range(task.num_labels)]


def _auto_class(task):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return AutoModelForTokenClassification if task.type == "token_classification" else AutoModelForSequenceClassification


def merge_lora(model) -> None:
    """Fold every LoRA factor pair into the weight it adapts (W + B A · alpha / r)."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer) and not module.merged:
            module.merge()


def linear_head_state(state: dict, plain, model) -> dict:
    """The linear head's tensors as transformers' standard head (see the module docstring)."""
    import torch

    weight, bias = state.pop("classifier.weight"), state.pop("classifier.bias")
    eye = torch.eye(weight.shape[1], dtype=weight.dtype) / LINEAR_SCALE
    if hasattr(getattr(plain, "classifier", None), "out_proj"):  # RoBERTa-style head: dense, tanh, out_proj
        dense, out = "classifier.dense", "classifier.out_proj"
    elif getattr(plain.base_model, "pooler", None) is not None:  # BERT-style: pooler (dense, tanh), classifier
        dense, out = f"{plain.base_model_prefix}.pooler.dense", "classifier"
    else:
        raise ConfigError(f"model.head=linear: cannot map {type(model).__name__}'s head onto a standard one")
    state.update({f"{dense}.weight": eye, f"{dense}.bias": torch.zeros(weight.shape[1], dtype=weight.dtype),
                  f"{out}.weight": weight * LINEAR_SCALE, f"{out}.bias": bias})
    return state


def model_spec(cfg) -> ModelSpec:
    """The record's `model.*` as the spec the lower layers take (keys added since it was written read as None)."""
    return build(ModelSpec, cfg.model, "model", stored=True)


def standard_model(model, cfg):
    """The run's model (LoRA merged) as transformers' own class for the task, with its label names."""
    from spafit_exp.inputs.heads import head_of

    merge_lora(model)
    state = {k.replace(".base_layer.", "."): v.detach().cpu() for k, v in model.state_dict().items()
             if "lora_" not in k}
    config = copy.deepcopy(model.config)
    names = label_names(cfg.task)
    config.id2label, config.label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    plain = _auto_class(cfg.task).from_config(config)
    if head_of(model_spec(cfg)) == "linear" and cfg.task.type != "token_classification":
        state = linear_head_state(state, plain, model)
    missing, unexpected = plain.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"method={cfg.method.name}: its model does not map onto {type(plain).__name__} "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]}); use checkpoint.load_run instead")
    return plain.eval()


def save_adapter(prepared_model, cfg, folder: Path) -> None:
    """The LoRA factors and the head in peft's format, for the run's base model (`PeftModel.from_pretrained(base,
    folder)`); before merging, from the run's own peft config."""
    import dataclasses
    import warnings

    import torch
    from peft import get_peft_model

    from spafit_exp.engine.artefacts import seeded_model
    from spafit_exp.inputs.modeling import weights_source

    base = seeded_model(*stored_specs(cfg), cfg.trainer.seed)
    source = weights_source(model_spec(cfg)) if cfg.model.init == "pretrained" else None
    config = dataclasses.replace(prepared_model.peft_config["default"], modules_to_save=["classifier"],
                                 task_type="TOKEN_CLS" if cfg.task.type == "token_classification" else "SEQ_CLS",
                                 base_model_name_or_path=source, inference_mode=True)
    with warnings.catch_warnings():  # peft asks transformers a deprecated question (is_gradient_checkpointing)
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = get_peft_model(base, config)
    own = prepared_model.state_dict()
    with torch.no_grad():
        for name, tensor in wrapped.state_dict(keep_vars=True).items():
            if "lora_" in name or ".modules_to_save." in name:
                tensor.copy_(own[name.removeprefix("base_model.model.").replace(".modules_to_save.default", "")])
    wrapped.save_pretrained(str(folder))


def load_model(run_dir: Path, cfg):
    """The run's best-epoch model (checkpoint.load_run): its base checked cheaply first (model_files), its tensors
    read with safetensors (no pickle); a damaged or foreign tensors file is one line naming it."""
    from safetensors import SafetensorError

    from spafit_exp.engine.artefacts import load_run
    from spafit_exp.inputs.modeling import check_model_files

    check_model_files(model_spec(cfg))
    try:
        return load_run(Path(run_dir))[0]
    except (SafetensorError, KeyError) as err:
        why = " ".join(str(err).split())[:160]
        raise ConfigError(f"{Path(run_dir) / TRAINABLE_FILE}: unreadable or not this run's tensors ({why})") from None


def _files_with_umask(folder: Path) -> None:
    """safetensors writes 0600 files whatever the umask: the folder's mode (0o777 less the umask) says what the
    user's files get."""
    mode = stat.S_IMODE(os.stat(folder).st_mode) & 0o666
    for root, _, files in os.walk(folder):
        for path in (Path(root) / name for name in files):
            if not path.is_symlink():
                os.chmod(path, mode)


def export(run_dir: Path, out: Path) -> dict:
    """Write the run's model to `out` (see the module docstring); returns what spafit_export.json says."""
    record = completed_run(run_dir)
    out = check_out(out)
    cfg = OmegaConf.create(record["config"])
    from spafit_exp.inputs.heads import head_of
    from spafit_exp.inputs.modeling import build_tokenizer

    method = load_model(run_dir, cfg)
    tokenizer = build_tokenizer(model_spec(cfg))
    tokenizer.model_max_length = int(cfg.trainer.max_len)  # truncation=True cuts where the run's inputs were cut
    tmp = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    out.parent.mkdir(parents=True, exist_ok=True)
    os.mkdir(tmp)
    try:
        adapter = cfg.method.name == "lora"
        if adapter:
            save_adapter(method.model, cfg, tmp / ADAPTER_DIR)
        standard_model(method.model, cfg).save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        best = record["metrics"]["best"]
        facts = {"run_dir": str(Path(run_dir).resolve()), "fingerprint": (record.get("fingerprint") or {}).get("hash"),
                 "task": cfg.task.name, "method": cfg.method.name, "method_tag": record.get("method_tag"),
                 "head": head_of(model_spec(cfg)), "main_metric": record.get("main_metric"), "best_epoch": best.get("epoch"),
                 "dev": best.get("dev"), "labels": label_names(cfg.task), "max_len": int(cfg.trainer.max_len),
                 "adapter": ADAPTER_DIR if adapter else None}
        (tmp / EXPORT_FILE).write_text(json.dumps(facts, indent=2) + "\n")
        _files_with_umask(tmp)
        os.replace(tmp, out)  # onto a missing or empty folder only (check_out)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise WriteFailed(err.errno, err.strerror or str(err), str(out)) from None
        raise
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spafit_exp.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a completed run's directory (it holds results.json)")
    parser.add_argument("--out", type=Path, required=True, help="the new folder to write (missing or empty)")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards": one line below says what was written

    def command() -> int:
        facts = export(args.run_dir, args.out)
        dev = (facts["dev"] or {}).get(facts["main_metric"])
        print(f"exported {args.run_dir} -> {args.out} ({facts['method']}, dev {facts['main_metric']}={dev}"
              f"{', adapter in ' + str(args.out / ADAPTER_DIR) if facts['adapter'] else ''})")
        return 0

    return exit_status(command)


if __name__ == "__main__":
    sys.exit(main())
