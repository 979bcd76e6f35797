"""A model you can take away: `spafit_exp.export` writes a folder that transformers alone loads and that scores
what the run's record says; `spafit_exp.predict` writes GLUE submission files; both refuse bad paths in one line."""

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from spafit_exp import REPO_ROOT
from spafit_exp.core import results
from spafit_exp.engine.artefacts import load_run, seeded_model
from spafit_exp.export import LINEAR_SCALE, export, standard_model
from spafit_exp.export import main as export_main
from spafit_exp.inputs.data import load_task_data
from spafit_exp.inputs.heads import with_head
from spafit_exp.inputs.modeling import build_tokenizer
from spafit_exp.predict import HEADER, prediction_lines
from spafit_exp.predict import main as predict_main
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from spafit_exp.run.spec import resolve
from tests.conftest import TINY_RUN, compose
from tests.helpers import tiny_model

RUNS = {  # the subset run trains the subset paper's head (model.head=linear), which export maps onto BERT's own
    "full_ft": ["method=full_ft"],
    "lora": ["method=lora", "method.r=4", "method.alpha=8"],
    "subset": ["method=subset", "selector=random", "selector.k=150", "decoder.epochs=1", "model.head=linear",
               "trainer.lr=1e-2"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One completed tiny run per method (trained once for every test here)."""
    root = tmp_path_factory.mktemp("runs")
    done = {}
    for name, extra in RUNS.items():
        cfg = compose([*TINY_RUN, f"run.root={root}/out", f"data.cache_dir={root}/cache", "trainer.epochs=2", *extra])
        assert run(cfg)["status"] == "completed"
        done[name] = (resolve(cfg), run_dir(cfg))  # the run's spec: what the lower layers take
    return done


def dev_predictions(model, cfg, tokenizer):
    data = load_task_data(cfg, tokenizer)
    batch = data.collate(data.evals["dev"])
    gold = batch.pop("labels")
    with torch.inference_mode():
        logits = model.eval()(**batch).logits
    return logits, gold


@pytest.mark.parametrize("method", list(RUNS))
def test_export_reloads_with_transformers_alone_and_scores_the_record(runs, tmp_path, method):
    cfg, directory = runs[method]
    record = results.read(directory)
    assert export_main([str(directory), "--out", str(tmp_path / "model")]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    assert tokenizer.model_max_length == cfg.trainer.max_len
    logits, gold = dev_predictions(model, cfg, tokenizer)
    accuracy = (logits.argmax(-1) == gold).float().mean().item()
    assert abs(accuracy - record["metrics"]["best"]["dev"]["accuracy"]) < 1e-6
    own, _ = dev_predictions(load_run(directory)[0].model, cfg, tokenizer)
    assert torch.equal(logits.argmax(-1), own.argmax(-1))
    torch.testing.assert_close(logits, own, rtol=1e-5, atol=1e-6)
    facts = json.loads((tmp_path / "model" / "spafit_export.json").read_text())
    assert facts["dev"] == record["metrics"]["best"]["dev"] and facts["method"] == cfg.method.name
    assert (facts["adapter"] == "adapter") == (method == "lora") == (tmp_path / "model" / "adapter").is_dir()


def test_lora_adapter_alone_in_peft_format_gives_the_same_model(runs, tmp_path):
    from peft import PeftModel

    cfg, directory = runs["lora"]
    export(directory, tmp_path / "model")
    assert json.loads((tmp_path / "model/adapter/adapter_config.json").read_text())["r"] == 4
    adapted = PeftModel.from_pretrained(seeded_model(cfg.model, cfg.task, cfg.trainer.seed), tmp_path / "model/adapter")
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(dev_predictions(adapted, cfg, tokenizer)[0], dev_predictions(merged, cfg, tokenizer)[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_linear_head_maps_exactly_onto_the_standard_head(family):
    model = with_head(tiny_model(family, num_labels=3), "linear", "classification").eval()
    cfg = OmegaConf.create({"model": {"head": "linear"}, "method": {"name": "full_ft"},
                            "task": {"type": "classification", "labels": ["a", "b", "c"], "num_labels": 3}})
    ids = torch.randint(3, 100, (4, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        plain = standard_model(model, cfg)
        got = plain(input_ids=ids).logits
    assert type(plain).__name__ == f"{'Bert' if family == 'bert' else 'Roberta'}ForSequenceClassification"
    assert LINEAR_SCALE == 2 ** 20
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_predict_writes_a_glue_submission_file(runs, tmp_path):
    cfg, directory = runs["lora"]
    dev = (REPO_ROOT / "data/glue/rte/dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "rows.tsv").write_text("".join([dev[0], *dev[6:18]]), encoding="utf-8")  # 12 rows, index 5..16
    assert predict_main([str(directory), str(tmp_path / "rows.tsv"), "--out", str(tmp_path / "RTE.tsv")]) == 0
    lines = (tmp_path / "RTE.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 13
    assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(5, 17)]  # the file's own ids
    logits, _ = dev_predictions(load_run(directory)[0].model, cfg, build_tokenizer(cfg.model))
    names = ["entailment", "not_entailment"]
    assert [line.split("\t")[1] for line in lines[1:]] == [names[i] for i in logits.argmax(-1)[5:17]]
    test = (REPO_ROOT / "data/glue/rte/test.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "test.tsv").write_text("".join(test[:6]), encoding="utf-8")  # unlabelled, as GLUE's test files
    assert predict_main([str(directory), str(tmp_path / "test.tsv"), "--out", str(tmp_path / "test_pred.tsv")]) == 0
    assert len((tmp_path / "test_pred.tsv").read_text().splitlines()) == 6


@pytest.mark.parametrize("task, logits, expected", [
    ("rte", [[0.2, 0.1], [0.0, 3.0]], ["entailment", "not_entailment"]),
    ("sst2", [[0.2, 0.1], [0.0, 3.0]], ["0", "1"]),
    ("mnli", [[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], ["neutral", "contradiction"]),
    ("stsb", [[3.14159], [0.5]], ["3.142", "0.500"]),
])
def test_prediction_lines_as_glue_expects(task, logits, expected):
    import numpy as np

    lines = prediction_lines(compose([f"task={task}"]).task, ["7", "8"], np.array(logits))
    assert lines == [HEADER, f"7\t{expected[0]}", f"8\t{expected[1]}"]


def tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_bad_paths_are_refused_in_one_line_and_nothing_is_written(runs, tmp_path, capsys):
    _, directory = runs["full_ft"]
    running = tmp_path / "running"
    shutil.copytree(directory, running)
    record = json.loads((running / "results.json").read_text())
    (running / "results.json").write_text(json.dumps({**record, "status": "running"}))
    untrained = tmp_path / "untrained"
    shutil.copytree(directory, untrained)
    (untrained / "trainable.safetensors").unlink()
    planted = tmp_path / "planted"
    shutil.copytree(directory, planted)
    marker = tmp_path / "pwned"
    (planted / "trainable.safetensors").write_bytes(pickle.dumps(_Marker(str(marker))))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    cases = [
        ([str(directory), "--out", str(directory / "model")], "inside the run directory"),
        ([str(directory), "--out", str(running / "sub" / "model")], "inside the run directory"),
        ([str(directory), "--out", str(tmp_path / "link")], "symbolic link"),
        ([str(directory), "--out", str(tmp_path / "full")], "not an empty folder"),
        ([str(running), "--out", str(tmp_path / "a")], "not completed"),
        ([str(untrained), "--out", str(tmp_path / "b")], "trainer.save_trainable=false"),
        ([str(tmp_path / "nope"), "--out", str(tmp_path / "c")], "no such run directory"),
        ([str(planted), "--out", str(tmp_path / "d")], "trainable.safetensors: unreadable"),
    ]
    before = tree(tmp_path), tree(directory)
    for argv, message in cases:
        assert export_main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)
    assert predict_main([str(directory), str(REPO_ROOT / "data/glue/rte/test.tsv"), "--out",
                         str(directory / "RTE.tsv")]) == 2
    assert "inside the run directory" in capsys.readouterr().err
    assert (tree(tmp_path), tree(directory)) == before and not marker.exists()


class _Marker:
    """A pickle that would create a file if anything unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cli_exports_with_the_users_umask_and_refuses_with_exit_2(runs, tmp_path):
    _, directory = runs["full_ft"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    refused = subprocess.run([sys.executable, "-m", "spafit_exp.export", str(directory), "--out", str(directory / "m")],
                             capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    saved = os.umask(0o022)
    try:
        done = subprocess.run([sys.executable, "-m", "spafit_exp.export", str(directory), "--out",
                               str(tmp_path / "m")], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                              timeout=600)
    finally:
        os.umask(saved)
    assert done.returncode == 0, done.stderr
    assert "exported" in done.stdout and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}
