"""One RunDir owns a run directory (layout, lock, state, claim, the one writer of results.json) and one Record type
is results.json: the state of a directory is decided in core/run_dir.py alone, the run and the studies write
through the same lock, fingerprint check and atomic write, and a record read and written again is unchanged."""

import ast
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from spafit_exp import CONF_DIR
from spafit_exp.core.errors import ConfigError, RecipeMismatch
from spafit_exp.core.record import SCHEMA_VERSION, CorruptRecord, Record
from spafit_exp.core.run_dir import RunBusy, RunDir
from spafit_exp.run.app import run
from tests.conftest import TINY_RUN, compose

PACKAGE = Path(__file__).resolve().parent.parent / "spafit_exp"


def decision_sites(package: Path = PACKAGE) -> dict[str, list[str]]:
    """Where a run directory's state or claim is decided: functions named like the old deciders, and every
    construction of a RunState, a Claim or a RecipeMismatch; {module path: [what]}. repro/ is left out: its
    `Claim` is a paper's claim (repro/claims.py), and it reads states through RunDir like sweep status."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in package.rglob("*.py") if p.relative_to(package).parts[0] != "repro"):
        name = str(path.relative_to(package))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in ("_previous", "_claim", "classify",
                                                                                   "Claim", "RunState"):
                found.setdefault(name, []).append(f"defines {node.name}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("RunState", "Claim", "RecipeMismatch"):
                found.setdefault(name, []).append(f"builds {node.func.id}")
    return found


def test_only_run_dir_decides_a_run_directorys_state():
    """No `_previous`/`_claim` in run/app.py, no core/run_states.classify: the states, the claim and the refusal
    for another recipe are built in core/run_dir.py only (engine/resume.py refuses a resume.pt of another recipe:
    the checkpoint's own check, not the directory's state)."""
    sites = decision_sites()
    assert not (PACKAGE / "core" / "run_states.py").exists()
    assert set(sites) == {"core/run_dir.py", "engine/resume.py"}, sites
    assert sites["engine/resume.py"] == ["builds RecipeMismatch"]


def test_the_decision_check_sees_a_second_decider(tmp_path):
    """The check itself can fail: a module deciding a directory's state on its own is reported."""
    (tmp_path / "app.py").write_text("def _previous(cfg):\n    raise RecipeMismatch('x')\n")
    assert decision_sites(tmp_path) == {"app.py": ["defines _previous", "builds RecipeMismatch"]}


def record_writers(package: Path = PACKAGE) -> list[str]:
    """Modules that hand results.json (the name RESULTS or the literal) to a file writer."""
    writers = {"write_json_atomic", "replace_atomically", "write_text", "write_bytes", "open"}
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in writers:
                names = {n.id for a in node.args for n in ast.walk(a) if isinstance(n, ast.Name)}
                texts = {n.value for a in node.args for n in ast.walk(a) if isinstance(n, ast.Constant)}
                if "RESULTS" in names or "results.json" in texts:
                    found.append(str(path.relative_to(package)))
    return found


def test_one_writer_produces_every_results_json(tmp_path):
    """RunDir.write is the only code that writes a record (the run's and the studies'); the check itself fails on
    a second writer."""
    assert record_writers() == ["core/run_dir.py"]
    (tmp_path / "study.py").write_text("def save(d, r):\n    write_json_atomic(d / RESULTS, r)\n")
    assert record_writers(tmp_path) == ["study.py"]


def test_layout_is_the_configs_run_dir_and_hydras_sweep_folders(tmp_path):
    """conf/config.yaml spells the layout twice (run.dir; hydra.sweep.dir + subdir): both are RunDir.of's."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"), resolve=False)
    assert f"{raw['hydra']['sweep']['dir']}/{raw['hydra']['sweep']['subdir']}" == raw["run"]["dir"]
    for lr in ("1e-3", "6e-05", "2e-5", "1e+30", "0.1"):
        cfg = compose([*TINY_RUN, f"run.root={tmp_path}", f"trainer.lr={lr}", "trainer.seed=3", "method=lora_ii"])
        run_dir = RunDir.of(cfg.run.root, cfg.experiment_name, cfg.task.name, cfg.method.tag, cfg.model.name,
                            cfg.trainer.lr, cfg.trainer.seed)
        assert run_dir.path == Path(cfg.run.dir), lr
        assert run_dir.experiment_root == tmp_path / cfg.experiment_name


def _write(directory: Path, **fields) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps({"main_metric": "accuracy", **fields}))
    return directory


@pytest.mark.parametrize("held, resume_pt, resume, state, action", [
    ("completed", False, True, "refused", "error"),
    ("interrupted", True, True, "refused", "error"),
    ("interrupted", True, False, "interrupted", "run"),  # run.resume=false starts over: not refused
    ("failed", False, True, "failed", "run"),
])
def test_the_claim_and_sweep_status_apply_one_rule(tmp_path, held, resume_pt, resume, state, action):
    """A record of another recipe: what `sweep status` calls the directory and what the run does agree, since
    both ask RunDir (refused ⇔ the run is refused with RecipeMismatch)."""
    directory = _write(tmp_path / "d", status=held, fingerprint={"hash": "old", "settings": {"trainer.epochs": 1}})
    if resume_pt:
        (directory / "resume.pt").write_bytes(b"x")
    run_dir = RunDir(directory)
    assert run_dir.state("new", resume=resume).state == state
    claim = run_dir.claim({"hash": "new", "settings": {"trainer.epochs": 2}}, resume=resume)
    claim.release()
    assert claim.action == action and claim.mismatch == (action == "error")
    if action == "error":
        assert "trainer.epochs 1 → 2" in claim.message and (directory / "results.json").is_file()
    else:  # replaced: kept aside, never deleted
        assert len(list(directory.glob("results.replaced-*.json"))) == 1


def test_force_makes_a_completed_or_refused_directory_todo(tmp_path):
    directory = _write(tmp_path / "d", status="completed", fingerprint={"hash": "a"})
    assert RunDir(directory).state("a").state == "completed"
    assert RunDir(directory).state("b").state == "refused"
    assert {RunDir(directory).state(r, force=True).state for r in ("a", "b")} == {"todo"}


def test_writer_refuses_another_recipes_record_and_a_held_lock(tmp_path):
    directory = _write(tmp_path / "d", status="completed", fingerprint={"hash": "old", "settings": {}})
    new = Record(status="completed", fingerprint={"hash": "new", "settings": {"x": 1}})
    with pytest.raises(RecipeMismatch, match="holds a completed run with a different recipe"):
        RunDir(directory).write(new)
    assert json.loads((directory / "results.json").read_text())["fingerprint"]["hash"] == "old"
    lock = RunDir(directory).lock()
    try:
        with pytest.raises(RunBusy, match="another process holds its lock"):
            RunDir(directory).write(new, force=True)
    finally:
        lock.close()
    RunDir(directory).write(new, force=True)
    assert RunDir(directory).record() == new and len(list(directory.glob("results.replaced-*.json"))) == 1


def test_a_real_record_reads_and_writes_back_byte_for_byte(tmp_path):
    cfg = compose([*TINY_RUN, f"run.root={tmp_path}"])
    returned = run(cfg)
    text = (Path(cfg.run.dir) / "results.json").read_text()
    record = Record.from_json(json.loads(text))
    assert record.schema == SCHEMA_VERSION and record.completed and record.task == "rte" and record.lr == 1e-3
    assert record.dev_score == returned["metrics"]["best"]["dev"]["accuracy"]
    assert record.fingerprint_hash == returned["fingerprint"]["hash"] and record.extra == {}
    assert json.dumps(record.to_json(), indent=2) == text  # same keys, same order, same values
    assert RunDir(cfg.run.dir).record() == record


def test_an_old_record_reads_with_its_gaps_and_keys_kept(tmp_path):
    """Written before `schema`, fingerprints and main_metric existed, with a key this version does not know."""
    old = {"status": "completed", "task": "rte", "method_tag": "full_ft", "lr": 2e-5, "seed": 1,
           "metrics": {"best": {"epoch": 2, "dev": {"accuracy": 0.6}}}, "failed_step": None, "notes": {"by": "hand"}}
    record = Record.from_json(old)
    assert record.schema is None and record.fingerprint_hash is None and record.settings is None
    assert record.main_metric is None and record.dev_score is None and record.scores("dev") == {"accuracy": 0.6}
    assert record.reported_split == "dev" and record.extra == {"notes": {"by": "hand"}}
    assert record.to_json() == old  # the explicit null and the unknown key survive
    RunDir(tmp_path).write(record)
    assert json.loads((tmp_path / "results.json").read_text()) == old
    for bad, why in [([1], "not a JSON object"), ({"lr": "fast"}, "lr='fast': must be a number")]:
        with pytest.raises(CorruptRecord, match=why):
            Record.from_json(bad)


def test_a_new_record_has_the_schema_and_drops_unset_fields():
    record = Record(task="rte").update(failed_step=None, custom=1)
    assert record.to_json() == {"schema": SCHEMA_VERSION, "status": "running", "task": "rte", "failed_step": None,
                                "custom": 1}


PROBE = [*TINY_RUN, "study=mlm_probe", "study.train_lines=24", "study.test_lines=8", "study.epochs=1"]


def test_a_study_writes_through_the_lock_and_the_fingerprint_check(tmp_path):
    """Studies wrote their records with no lock and no fingerprint check; now through RunDir.write: refused while
    another process holds the directory, refused over another recipe's record unless run.force=true."""
    target = RunDir.of(tmp_path, "mlm_probe", "none", "pretrained", "tiny_bert", 0.0, 1)
    target.path.mkdir(parents=True)
    lock = target.lock()
    try:
        with pytest.raises(ConfigError, match="another process holds its lock"):
            run(compose([*PROBE, f"run.root={tmp_path}"]))
        assert not (target.path / "results.json").exists()
    finally:
        lock.close()
    _write(target.path, status="completed", fingerprint={"hash": "other", "settings": {}})
    with pytest.raises(RecipeMismatch, match="different recipe"):
        run(compose([*PROBE, f"run.root={tmp_path}"]))
    assert target.record().fingerprint_hash == "other"
    (record,) = run(compose([*PROBE, f"run.root={tmp_path}", "run.force=true"]))
    assert target.record().to_json() == record and len(list(target.path.glob("results.replaced-*.json"))) == 1
