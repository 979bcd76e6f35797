"""End to end: composed config -> data -> model -> method -> loop -> results.json, in-process and via the CLI."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from spafit_exp import REPO_ROOT
from spafit_exp.core import results
from spafit_exp.engine.artefacts import load_run
from spafit_exp.inputs.data import load_task_data
from spafit_exp.inputs.modeling import build_tokenizer
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from spafit_exp.run.spec import resolve
from tests.conftest import TINY_RUN, compose, run_cli


def tiny(tmp_path, *extra):
    return compose([*TINY_RUN, f"run.root={tmp_path}", *extra])


def test_tiny_run_writes_complete_record(tmp_path):
    cfg = tiny(tmp_path, "trainer.epochs=2", "experiment_name=e2e")
    record = run(cfg)
    directory = tmp_path / "e2e/rte/full_ft/tiny_bert/lr=0.001/seed=1"
    on_disk = results.read(directory)
    assert on_disk == json.loads(json.dumps(record, default=str))
    assert on_disk["status"] == "completed"
    assert [e["epoch"] for e in on_disk["metrics"]["epochs"]] == [1, 2]
    assert math.isfinite(on_disk["metrics"]["best"]["dev"]["accuracy"])
    assert on_disk["params"]["trainable"] == on_disk["params"]["total"] > 0
    assert on_disk["config"]["trainer"]["lr"] == 1e-3 and on_disk["provenance"]["versions"]["torch"]
    assert on_disk["timing"]["train_samples_per_s"] > 0 and on_disk["train"]["samples"] == 64
    assert (directory / "trainable.safetensors").is_file()
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_same_seed_same_metrics(tmp_path):
    first = run(tiny(tmp_path / "a"))
    second = run(tiny(tmp_path / "b"))
    assert first["metrics"] == second["metrics"] and first["train"]["losses"] == second["train"]["losses"]


def test_skip_if_done_and_force(tmp_path):
    run(tiny(tmp_path))
    path = tmp_path / "default/rte/full_ft/tiny_bert/lr=0.001/seed=1/results.json"
    stamp = path.stat().st_mtime_ns
    run(tiny(tmp_path))
    assert path.stat().st_mtime_ns == stamp
    run(tiny(tmp_path, "run.force=true"))
    assert path.stat().st_mtime_ns != stamp


@pytest.mark.parametrize("method", ["spafit", "lora", "full_bitfit"])
def test_saved_trainable_state_reproduces_dev_metric(tmp_path, method):
    extra = ["method.n1=-1", "method.n2=0", "method.r=4", "method.alpha=8"] if method == "spafit" else []
    extra += ["method.r=4", "method.alpha=8"] if method == "lora" else []
    cfg = tiny(tmp_path, f"method={method}", "trainer.epochs=2", *extra)
    record = run(cfg)
    directory = run_dir(cfg)
    prepared, saved = load_run(directory)
    assert saved["status"] == "completed"
    frozen_bytes = sum(p.numel() for p in prepared.model.parameters() if not p.requires_grad)
    from safetensors.torch import load_file

    stored = sum(t.numel() for t in load_file(str(directory / "trainable.safetensors")).values())
    assert stored == record["params"]["trainable"] < frozen_bytes  # the frozen base is never saved
    spec = resolve(OmegaConf.create(saved["config"]))
    data = load_task_data(spec, build_tokenizer(spec.model))
    model = prepared.model.eval()
    preds, gold = [], []
    with torch.inference_mode():
        for batch in DataLoader(data.evals["dev"], batch_size=64, collate_fn=data.collate):
            gold += batch.pop("labels").tolist()
            preds += model(**batch).logits.argmax(-1).tolist()
    accuracy = sum(p == g for p, g in zip(preds, gold)) / len(gold)
    assert accuracy == record["metrics"]["best"]["dev"]["accuracy"]


def test_embedded_model_on_real_rte_slice(tmp_path):
    cfg = compose([f"run.root={tmp_path}", "trainer.max_train_samples=48", "trainer.max_eval_samples=48",
                   "trainer.epochs=1", "trainer.max_len=64", "method=spafit"])
    record = run(cfg)
    assert record["status"] == "completed" and record["model"] == "minilm"
    assert 0.0 <= record["metrics"]["best"]["dev"]["accuracy"] <= 1.0
    assert record["method_info"]["groups"] == {"frozen": [0, 1], "bitfit": [2], "lora": [3, 4, 5]}


BAD_CLI = [
    (["task=nope"], "task=nope"),
    (["trainer.lr=-1"], "trainer.lr=-1"),
    (["data.dir=/nonexistent/glue_data"], "/nonexistent/glue_data"),
    (["method=spafit_8_12_ii"], "method.n1=8 method.n2=12"),
    (["trainer.lrr=1"], "Could not override 'trainer.lrr'"),
    (["-m", "trainer.lr=1e-3,2e-3", "trainer.batchsize=4"], "trainer.batchsize"),
    (["trainer.lr=[1,2"], "bad override"),
    (["trainer.adam_betas=[2,0.9]"], "trainer.adam_betas=[2.0, 0.9]"),
    (["trainer.adam_betas=[0.9]"], "trainer.adam_betas=[0.9]"),
    (["data.num_workers=-1"], "data.num_workers=-1"),
    (["task=stsb", "task.metrics=[accuracy]"], "task.metrics=['accuracy']"),
    (["task.num_labels=1"], "task.num_labels=1"),
    (["run.root=/proc/nope"], "run.root=/proc/nope"),
    (["data.source=hub"], "data.source=hub"),
    (["selector=random", "method=full_ft"], "selector=random"),
    (["task=stsb", "task.main_metric=accuracy"], "task.main_metric=accuracy"),
    (["trainer.checkpoint_every=-1"], "trainer.checkpoint_every=-1"),
    (["model.arch.num_hidden_layers=0"], "model.arch.num_hidden_layers=0"),
    (["model=roberta_base"], "model=roberta_base"),  # needs the hub, which is offline here
]


# The CLI as run_cli runs it, reporting on stdout (one `WATCH {...}` line at exit) whether the run itself
# (spafit_exp.run.app) was imported and which calls that build a model or tokenizer, or load data, were made.
WATCHED = {"spafit_exp.inputs.modeling": ["build_model", "build_tokenizer", "load_pretrained"],
           "spafit_exp.inputs.data": ["load_task_data"]}
WATCH = f"""
import atexit, importlib.machinery, json, runpy, sys
WATCHED, called = {WATCHED!r}, []

class Watch:
    def find_spec(self, name, path, target=None):
        if name not in WATCHED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            for fn in WATCHED[name]:
                def spy(*args, _fn=getattr(module, fn), _name=fn, **kwargs):
                    called.append(_name)
                    return _fn(*args, **kwargs)
                setattr(module, fn, spy)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Watch())
atexit.register(lambda: print("WATCH " + json.dumps({{"app": "spafit_exp.run.app" in sys.modules, "called": called}})))
sys.argv = ["spafit_exp", *sys.argv[1:]]
runpy.run_module("spafit_exp", run_name="__main__", alter_sys=True)
"""


def watched_cli(args: list[str], cwd) -> tuple[subprocess.CompletedProcess, dict]:
    """run_cli's command line under WATCH: the process, its stdout without the WATCH line, and what it did."""
    proc = subprocess.run([sys.executable, "-c", WATCH, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    lines = proc.stdout.splitlines()
    watched = [json.loads(line[len("WATCH "):]) for line in lines if line.startswith("WATCH ")]
    assert len(watched) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    proc.stdout = "\n".join(line for line in lines if not line.startswith("WATCH "))
    return proc, watched[0]


@pytest.mark.parametrize("args,needle", BAD_CLI, ids=[a[-1] for a, _ in BAD_CLI])
def test_cli_bad_input_one_line_fast_nothing_written(tmp_path, args, needle):
    """Fast: rejected before the run starts, so no model, tokenizer or data is ever loaded (what would make it slow;
    a wall-clock limit would fail on a busy machine instead; the CLI's latency is benchmarked: scripts/bench_cli.py)."""
    proc, watched = watched_cli([f"run.root={tmp_path}/out", *args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert watched == {"app": False, "called": []}
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not (tmp_path / "out" / "default").exists()  # Hydra's eager run-dir mkdir is undone


def test_cli_dry_run_prints_report_and_writes_nothing(tmp_path):
    proc, watched = watched_cli([f"run.root={tmp_path}/out", "model=bert_large_cased", "method=spafit_8_12_ii",
                                 "trainer.dry_run=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert watched["app"] and "build_model" in watched["called"]  # WATCH sees a model built (on the meta device)
    assert proc.stdout.strip().splitlines()[-1] == "trainable_params=5881858 total_params=339348482"
    assert not [p for p in tmp_path.rglob("*") if p.is_file()] and not (tmp_path / "out" / "default").exists()


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_cli_multirun(tmp_path, launcher):
    proc = run_cli(["-m", f"launcher={launcher}", f"run.root={tmp_path}/out", *TINY_RUN[:-1], "trainer.lr=1e-3,2e-3"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = sorted(p.relative_to(tmp_path / "out").parent.as_posix() for p in (tmp_path / "out").rglob("results.json"))
    assert found == ["default/rte/full_ft/tiny_bert/lr=0.001/seed=1", "default/rte/full_ft/tiny_bert/lr=0.002/seed=1"]
    for path in (tmp_path / "out").rglob("results.json"):
        assert json.loads(path.read_text())["status"] == "completed"


def test_readme_commands_are_the_ci_commands():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci/run").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "\nmake install run\n" in readme and "\nmake test\n" in readme
    assert "\nmake install\nmake test\n" in ci
    assert "-m spafit_exp method=spafit task=rte" in makefile and "-m pytest -m 'not slow'" in makefile


def test_record_reports_test_split_where_the_task_has_one(tmp_path):
    """CoNLL-2003: epochs are chosen on eng.testa (dev) and eng.testb (test) is scored and reported."""
    cfg = tiny(tmp_path, "task=conll2003")
    run(cfg)
    record = json.loads(open(f"{cfg.run.dir}/results.json").read())
    metrics = record["metrics"]
    assert metrics["selection_split"] == "dev" and metrics["reported_split"] == "test"
    assert "entity_f1" in metrics["best"]["dev"] and "entity_f1" in metrics["best"]["test"]
    assert record["data"]["eval_rows"] == {"dev": 32, "test": 32}
