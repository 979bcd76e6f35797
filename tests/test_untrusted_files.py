"""Files a run reads that it did not just write are untrusted: a resume checkpoint, a statistics or decoder cache,
a model folder. Loading one runs no code (no pickled payload, no folder's Python unless model.trust_remote_code);
a damaged one is named in one warning, kept aside (checkpoint) or dropped (cache) and its work redone; a model
folder that cannot load is one line naming the file, exit 2, nothing left."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spafit_exp.core import fingerprint, stored
from spafit_exp.core.errors import ConfigError
from spafit_exp.engine.resume import RESUME_FILE
from spafit_exp.run.app import prepare, run
from spafit_exp.run.config import run_dir
from spafit_exp.run.spec import resolve
from spafit_exp.run.validation import validate
from tests.conftest import REPO, TINY_RUN, compose

DEAD_PID = 2 ** 22 + 11  # above any pid_max: no process has it


class Payload:
    """Unpickled, it creates `marker` (what a planted file's code could do instead)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _tiny(tmp_path, *extra):
    return compose([*TINY_RUN, f"run.root={tmp_path}/out", "trainer.checkpoint_every=2", *extra])


def _one_warning(err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and needle in lines[0], err


# --- resume checkpoints ------------------------------------------------------------------------------------------

def test_planted_resume_pickle_runs_nothing_and_is_kept_aside(tmp_path, capsys):
    cfg = _tiny(tmp_path)
    directory = run_dir(cfg)
    directory.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    torch.save({"trainable": {}, "rng": Payload(marker), "fingerprint": None}, directory / RESUME_FILE)

    record = run(cfg)
    assert not marker.exists()  # the rerun did not execute the planted pickle
    assert record["status"] == "completed"
    _one_warning(capsys.readouterr().err, str(directory / RESUME_FILE))
    (kept,) = directory.glob("resume.corrupt-*.pt")
    assert b"payload-ran" in kept.read_bytes()  # kept aside as it was, for whoever wants to look
    assert not (directory / RESUME_FILE).exists()


def test_truncated_resume_is_kept_aside_the_run_redone_and_killed_writes_cleaned(tmp_path, capsys):
    from accelerate import Accelerator

    from spafit_exp.engine.loop import StopRequested, train
    from spafit_exp.inputs.data import load_task_data
    from spafit_exp.inputs.modeling import build_tokenizer

    reference = run(_tiny(tmp_path / "ref"))
    cfg = _tiny(tmp_path)
    directory = run_dir(cfg)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(StopRequested):
        spec = resolve(cfg)
        train(spec, prepare(spec), load_task_data(spec, build_tokenizer(spec.model)), Accelerator(),
              checkpoint_dir=directory, stop=stop)
    path = directory / RESUME_FILE
    data = path.read_bytes()
    killed_write = directory / f".{RESUME_FILE}.{DEAD_PID}.0badcafe.tmp"  # a write SIGKILLed before its rename
    killed_write.write_bytes(data)
    path.write_bytes(data[: len(data) // 2])
    capsys.readouterr()

    record = run(cfg)
    assert record["status"] == "completed"
    assert record["train"]["losses"] == reference["train"]["losses"]  # started over: nothing half-restored
    assert record["metrics"] == reference["metrics"]
    _one_warning(capsys.readouterr().err, str(path))
    (kept,) = directory.glob("resume.corrupt-*.pt")
    assert kept.stat().st_size == len(data) // 2
    assert not killed_write.exists() and not path.exists()


# --- statistics and decoder caches ------------------------------------------------------------------------------

def _stage_cfg(tmp_path, selector, *extra):
    from tests.test_selectors import run_cfg

    options = ["selector.k=30", *(["selector.prune_lr=1e-2"] if selector == "diff_pruning" else [])]
    return run_cfg(tmp_path, selector, *options, *extra)


def _selected(prepared) -> dict:
    return {n: t for n, t in prepared.export_state(prepared.model).items() if n.endswith(".__idx")}


def _age(path: Path, seconds: float) -> Path:
    path.touch()
    old = path.stat().st_mtime - seconds
    os.utime(path, (old, old))
    return path


@pytest.mark.parametrize("selector", ["downstream_sqgrad", "diff_pruning"])
def test_truncated_statistics_cache_is_dropped_and_computed_again(tmp_path, capsys, selector):
    cfg = resolve(_stage_cfg(tmp_path, selector))
    first = _selected(prepare(cfg))
    (path,) = (tmp_path / "cache" / "stats").glob("*.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    folder = path.parent
    dead = _age(folder / f".{path.name}.{DEAD_PID}.0badcafe.tmp", 2 * stored.STALE_S)
    live = _age(folder / f".{path.name}.{os.getppid()}.0badcafe.tmp", 2 * stored.STALE_S)  # its writer is running
    recent = folder / f".{path.name}.{DEAD_PID + 1}.0badcafe.tmp"  # perhaps a writer on another host: too fresh
    recent.touch()
    capsys.readouterr()

    again = _selected(prepare(cfg))
    _one_warning(capsys.readouterr().err, str(path))
    assert again.keys() == first.keys() and all(torch.equal(again[n], first[n]) for n in first)
    assert path.stat().st_size == len(data)
    stored.load_tensors(path)  # whole again
    assert not dead.exists() and live.exists() and recent.exists()


@pytest.mark.parametrize("damage", ["head", "scores"])
def test_damaged_decoder_cache_is_dropped_and_trained_again(tmp_path, capsys, damage):
    cfg = resolve(_stage_cfg(tmp_path, "random"))
    first = prepare(cfg).info
    path = Path(first["decoder"])
    head = {n: t.clone() for n, t in load_file(str(path)).items()}  # not a view of the file damaged below
    if damage == "head":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.with_suffix(".json").write_text('{"accuracy": 0.5')
    capsys.readouterr()

    again = prepare(cfg).info
    _one_warning(capsys.readouterr().err, str(path))
    assert again["decoder_dev"] == first["decoder_dev"]
    assert all(torch.equal(t, load_file(str(path))[n]) for n, t in head.items())


def test_drop_temps_keeps_live_writers(tmp_path):
    dead = _age(tmp_path / f".x.pt.{DEAD_PID}.0badcafe.tmp", 2 * stored.STALE_S)
    fresh = tmp_path / f".x.pt.{DEAD_PID}.1badcafe.tmp"
    fresh.touch()
    live = _age(tmp_path / f".x.pt.{os.getppid()}.2badcafe.tmp", 2 * stored.STALE_S)
    mine = tmp_path / f".x.pt.{os.getpid()}.3badcafe.tmp"
    mine.touch()
    other = _age(tmp_path / "x.pt.tmp", 2 * stored.STALE_S)  # not a temp name of ours
    assert stored.drop_temps(tmp_path) == [dead]
    assert sorted(stored.drop_temps(tmp_path, exclusive=True)) == sorted([fresh, live])  # a locked run directory
    assert mine.exists() and other.exists()


# --- what loads, audited in the source --------------------------------------------------------------------------

def _calls(attr: str):
    for path in [*(REPO / "spafit_exp").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr:
                yield path.relative_to(REPO), node


def test_every_load_is_data_only_and_pins_remote_code():
    torch_loads = 0
    for path, node in [*_calls("load"), *_calls("loads")]:
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
        assert owner != "pickle", f"{path}:{node.lineno}"
        assert keywords.get("allow_pickle") is not True, f"{path}:{node.lineno}"
        if owner == "torch":
            torch_loads += 1
            assert keywords.get("weights_only") is True, f"{path}:{node.lineno}"
    assert torch_loads  # the audit sees the loaders
    pretrained = list(_calls("from_pretrained"))
    assert len(pretrained) >= 5
    for path, node in pretrained:
        assert any(k.arg == "trust_remote_code" for k in node.keywords), f"{path}:{node.lineno}"


def test_trust_remote_code_is_a_setting_of_every_model_and_of_the_fingerprint():
    for name in sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")):
        assert compose([f"model={name}"]).model.trust_remote_code is False, name
    plain, trusting = compose(["model=tiny_bert"]), compose(["model=tiny_bert", "model.trust_remote_code=true"])
    # At its default the key leaves the fingerprint of older records as it was (fingerprint.INTRODUCED_AT); set, it
    # is part of the recipe.
    assert fingerprint.of(trusting)["settings"]["model.trust_remote_code"] is True
    assert fingerprint.of(plain)["hash"] != fingerprint.of(trusting)["hash"]
    with pytest.raises(ConfigError, match="model.trust_remote_code"):
        validate(compose(["model=tiny_bert", "model.trust_remote_code=yes", "trainer.dry_run=true"]))


# --- model folders ------------------------------------------------------------------------------------------------

def _model_folder(folder: Path) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    arch = compose(["model=tiny_bert"]).model.arch
    BertForSequenceClassification(BertConfig(**arch)).save_pretrained(folder)
    return folder


def _custom_code(folder: Path, marker: Path) -> Path:
    """A folder whose config.json asks transformers to import its own module, which leaves `marker`."""
    settings = json.loads((folder / "config.json").read_text())
    settings.update(model_type="planted_bert", auto_map={"AutoConfig": "planted.PlantedConfig",
                                                         "AutoModelForSequenceClassification": "planted.PlantedModel"})
    (folder / "config.json").write_text(json.dumps(settings))
    (folder / "planted.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import BertConfig, BertForSequenceClassification\n\n\n"
        "class PlantedConfig(BertConfig):\n    model_type = 'planted_bert'\n\n\n"
        "class PlantedModel(BertForSequenceClassification):\n    config_class = PlantedConfig\n")
    return folder


def _damage(folder: Path, how: str, marker: Path) -> str:
    """Damage the model folder as `how` says; returns what the error line must name."""
    weights = folder / "model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:-1000])
        return str(weights)
    if how == "empty":
        for path in folder.iterdir():
            path.unlink()
        return f"model.path={folder}"
    if how == "pickled_bin":  # the only weights, a .bin whose pickle carries code
        torch.save({**load_file(str(weights)), "extra": Payload(marker)}, folder / "pytorch_model.bin")
        weights.unlink()
        return str(folder / "pytorch_model.bin")
    _custom_code(folder, marker)
    return "model.trust_remote_code=true"


def _cli(tmp_path, *args, stdin: str = "") -> subprocess.CompletedProcess:
    """The real command line; `stdin` answers any prompt (transformers asks "trust remote code? [y/N]")."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    return subprocess.run([sys.executable, "-m", "spafit_exp", *TINY_RUN, f"run.root={tmp_path}/out", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env, input=stdin)


@pytest.mark.parametrize("how", ["truncated", "empty", "pickled_bin", "custom_code"])
def test_model_folder_that_cannot_load_is_one_line_and_nothing_left(tmp_path, how):
    folder, marker = _model_folder(tmp_path / "model"), tmp_path / "code-ran"
    needle = _damage(folder, how, marker)
    proc = _cli(tmp_path, "model.init=pretrained", f"model.path={folder}", stdin="y\n")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr[-3000:]
    assert not marker.exists()
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # no .lock, no run.log, no record


@pytest.mark.parametrize("how", ["truncated", "empty", "pickled_bin", "custom_code"])
def test_model_folder_is_checked_before_the_run_directory_is_claimed(tmp_path, monkeypatch, how):
    from spafit_exp.run import app

    folder, marker = _model_folder(tmp_path / "model"), tmp_path / "code-ran"
    needle = _damage(folder, how, marker)
    monkeypatch.setattr(app.RunDir, "lock", lambda run_dir: pytest.fail(f"{run_dir.path} claimed"))
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        run(_tiny(tmp_path, "model.init=pretrained", f"model.path={folder}"))


def test_custom_code_runs_only_when_trusted_and_the_header_says_so(tmp_path):
    marker = tmp_path / "code-ran"
    folder = _custom_code(_model_folder(tmp_path / "model"), marker)
    proc = _cli(tmp_path, "model.init=pretrained", f"model.path={folder}", "model.trust_remote_code=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()
    assert "trust_remote_code=true" in next(line for line in proc.stdout.splitlines() if line.strip().startswith("model"))


def test_embedded_model_passes_the_folder_check():
    from spafit_exp.inputs.modeling import check_model_files

    check_model_files(resolve(compose(["model=minilm"])).model)  # safetensors header and config of the shipped model

