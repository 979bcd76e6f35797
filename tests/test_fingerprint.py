"""A run directory means one configuration: skip-if-done, resume and tables compare config fingerprints."""

import json

import pytest

from spafit_exp.core import fingerprint, results
from spafit_exp.core.errors import RecipeMismatch
from spafit_exp.core.run_dir import RunDir
from spafit_exp.report import tables
from spafit_exp.run.app import run
from spafit_exp.run.config import run_dir
from spafit_exp.run.spec import resolve
from tests.conftest import compose, run_cli
from tests.test_tables import _record

FIRST = ["model=tiny_bert", "trainer.max_train_samples=32", "trainer.max_eval_samples=32", "trainer.epochs=1",
         "experiment_name=x", "trainer.max_len=32"]
SECOND = ["model=tiny_bert", "trainer.max_train_samples=64", "trainer.max_eval_samples=32", "trainer.epochs=2",
          "experiment_name=x", "trainer.max_len=32"]


def _dir(root):
    return compose([*FIRST, f"run.root={root}"]).run.dir


def test_settings_ignore_outputs_and_logging_only():
    a = fingerprint.of(compose([*FIRST, "run.root=/a", "trainer.log_every=5", "tracking=offline"]))
    b = fingerprint.of(compose([*FIRST, "run.root=/b", "trainer.checkpoint_every=7", "experiment_name=y"]))
    assert a == b
    c = fingerprint.of(compose([*FIRST, "trainer.weight_decay=0.1"]))
    assert c["hash"] != a["hash"]
    assert fingerprint.differences(a["settings"], c["settings"]) == [("trainer.weight_decay", 0.01, 0.1)]
    assert "trainer.lr" in a["settings"] and "method.candidates" not in a["settings"]  # full_ft has no such key


def test_changed_recipe_is_refused_and_first_record_untouched(tmp_path):
    first = run_cli([*FIRST, f"run.root={tmp_path}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    directory = tmp_path / _dir(tmp_path).removeprefix(str(tmp_path) + "/")
    before = (directory / "results.json").read_bytes()
    listing = sorted(p.name for p in directory.iterdir())
    second = run_cli([*SECOND, f"run.root={tmp_path}"], cwd=tmp_path)
    assert second.returncode == 2
    line = second.stderr.strip()
    assert "\n" not in line and str(directory) in line and "different recipe" in line
    assert "trainer.epochs 1 → 2" in line and "trainer.max_train_samples 32 → 64" in line
    assert (directory / "results.json").read_bytes() == before and sorted(p.name for p in directory.iterdir()) == listing

    forced = run_cli([*SECOND, f"run.root={tmp_path}", "run.force=true"], cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    kept = list(directory.glob("results.replaced-*.json"))
    assert len(kept) == 1 and kept[0].read_bytes() == before
    assert results.read(directory)["config"]["trainer"]["epochs"] == 2


def test_sweep_after_an_edit_refuses_the_edited_jobs_only(tmp_path):
    common = ["model=tiny_bert", "trainer.max_eval_samples=32", "trainer.epochs=1", "trainer.max_len=32",
              "experiment_name=s", f"run.root={tmp_path}"]
    assert run_cli(["-m", *common, "trainer.max_train_samples=32", "trainer.lr=1e-3"], cwd=tmp_path).returncode == 0
    done = tmp_path / "s/rte/full_ft/tiny_bert/lr=0.001/seed=1"
    before = (done / "results.json").read_bytes()
    edited = run_cli(["-m", *common, "trainer.max_train_samples=48", "trainer.lr=1e-3,2e-3"], cwd=tmp_path)
    assert edited.returncode != 0
    assert "lr=0.001/seed=1 holds a completed run with a different recipe" in edited.stderr
    assert "trainer.max_train_samples 32 → 48" in edited.stderr and "lr=0.002/seed=1 holds" not in edited.stderr
    assert (done / "results.json").read_bytes() == before
    new = results.read(tmp_path / "s/rte/full_ft/tiny_bert/lr=0.002/seed=1")
    assert new["status"] == "completed" and new["data"]["train_rows"] == 48


def test_unfinished_run_of_another_recipe_is_not_resumed(tmp_path):
    cfg = compose([*FIRST, f"run.root={tmp_path}"])
    record = results.base_record(resolve(cfg))
    record.status = "interrupted"
    directory = run_dir(cfg)
    RunDir(directory).write(record)
    (directory / "resume.pt").write_bytes(b"checkpoint")
    with pytest.raises(RecipeMismatch, match=r"unfinished run \(resume.pt\).*trainer.epochs 1 → 2"):
        run(compose([*SECOND, f"run.root={tmp_path}"]))
    assert (directory / "resume.pt").read_bytes() == b"checkpoint"
    # run.resume=false starts over: the interrupted record is kept aside
    assert run(compose([*SECOND, f"run.root={tmp_path}", "run.resume=false"]))["status"] == "completed"
    assert len(list(directory.glob("results.replaced-*.json"))) == 1


def test_checkpoint_of_another_recipe_is_refused(tmp_path):
    from accelerate import Accelerator

    from spafit_exp.engine.resume import Checkpointer

    accelerator = Accelerator()
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    Checkpointer(tmp_path, accelerator, recipe="aaaa").save(model, optimizer, scheduler, None, {}, None, (0.0, 0))
    assert Checkpointer(tmp_path, accelerator, recipe="aaaa").restore(model, optimizer, scheduler, None) is not None
    with pytest.raises(RecipeMismatch, match="different recipe"):
        Checkpointer(tmp_path, accelerator, recipe="bbbb").restore(model, optimizer, scheduler, None)


def test_corrupt_record_is_kept_aside_and_the_run_redone(tmp_path):
    cfg = compose([*FIRST, f"run.root={tmp_path}"])
    assert run(cfg)["status"] == "completed"
    path = run_dir(cfg) / "results.json"
    path.write_text(path.read_text()[:200])
    proc = run_cli([*FIRST, f"run.root={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 0 and "unreadable record" in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert results.read(path.parent)["status"] == "completed"
    kept = list(path.parent.glob("results.corrupt-*.json"))
    assert len(kept) == 1 and len(kept[0].read_text()) == 200


def _fingerprinted(root, epochs, **fields):
    settings = {"trainer.epochs": epochs, "trainer.lr": fields.get("lr", 1e-3), "trainer.seed": fields.get("seed", 1)}
    return _record(root, 0.7, fingerprint={"hash": fingerprint.digest(settings), "settings": settings}, **fields)


def test_table_marks_a_cell_that_mixes_recipes(tmp_path):
    _fingerprinted(tmp_path, 3, seed=1)
    _fingerprinted(tmp_path, 3, seed=2, lr=1e-4)  # another seed and LR of the same recipe: fine
    _fingerprinted(tmp_path, 10, seed=3)
    _record(tmp_path, 0.7, task="mrpc")  # a record from before fingerprints
    cells = tables.select_lr(tables.collect(tmp_path)).set_index("task")
    assert cells.loc["rte", "mixed_keys"] == ["trainer.epochs"] and cells.loc["mrpc", "mixed_keys"] == []
    assert tables.MIXED in tables.fmt(cells.loc["rte"], "accuracy")
    out = tmp_path / "t"
    assert tables.main(["--root", str(tmp_path), "--out", str(out), "--plots", str(tmp_path / "p")]) == 0
    text = (out / "e.md").read_text()
    assert "‡ rte / m / x mixes 2 recipes (differing: trainer.epochs)" in text
    assert "1 runs have an unknown recipe" in text
    assert tables.main(["--root", str(tmp_path), "--out", str(out), "--strict"]) == 2


def test_unmixed_cells_have_no_marker(tmp_path):
    _fingerprinted(tmp_path, 3, seed=1)
    _fingerprinted(tmp_path, 3, seed=2)
    cell = tables.select_lr(tables.collect(tmp_path)).iloc[0]
    assert tables.MIXED not in tables.fmt(cell, "accuracy")
    assert json.dumps(cell["mixed_keys"]) == "[]"


def test_keys_added_later_keep_older_records_fingerprints():
    """A record written before `model.head` (or `model.trust_remote_code`) existed has no such setting; at the
    value that reproduces the old behaviour the new key must not change the fingerprint, or every finished run
    would be refused after an upgrade. Any other value must."""
    from omegaconf import OmegaConf

    cfg = compose(FIRST)
    old_tree = OmegaConf.to_container(cfg, resolve=True)
    for name in ("head", "trust_remote_code"):
        old_tree["model"].pop(name, None)
    assert fingerprint.of(old_tree) == fingerprint.of(cfg)
    assert fingerprint.of(compose([*FIRST, "model.head=linear"]))["hash"] != fingerprint.of(cfg)["hash"]
