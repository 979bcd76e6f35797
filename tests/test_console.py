"""The console as a researcher reads it: --help, the run header, quiet loading, the end-of-run summary, run.log,
and the sweep summary."""

from spafit_exp import CONF_DIR
from tests.conftest import run_cli

REAL_RUN = ["task=sst2", "trainer.max_train_samples=48", "trainer.max_eval_samples=16", "trainer.epochs=1",
            "trainer.max_len=32", "trainer.log_every=1", "trainer.eval_train_samples=0"]


def test_help_lists_every_group_and_option_but_no_schema(tmp_path):
    proc = run_cli(["--help"], cwd=tmp_path)
    assert proc.returncode == 0
    text = proc.stdout
    assert "is powered by Hydra" not in text and "spafit_exp: config-driven experiments" in text
    for group in sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        line = next((ln for ln in text.splitlines() if ln.strip().startswith(group + " ")), None)
        assert line is not None and len(line.split(None, 1)[1]) > 10, group  # named, with a description
        for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_")):
            assert option in text, (group, option)
    assert "trainer_schema" not in text and "data_schema" not in text and " _base" not in text
    assert run_cli(["--hydra-help"], cwd=tmp_path).returncode == 0


def test_default_run_console_header_summary_and_log(tmp_path):
    proc = run_cli([*REAL_RUN, f"run.root={tmp_path}/out"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = proc.stdout + proc.stderr
    assert "LOAD REPORT" not in console and "Saving the dataset" not in console and "Loading weights" not in console
    directory = tmp_path / "out/default/sst2/full_ft/minilm/lr=6e-05/seed=1"
    header = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith(("method", "task", "record"))]
    assert any("full_ft:" in ln and "22,713,986 of 22,713,986 parameters" in ln for ln in header), header
    assert any("sst2: 48 train, 16 dev rows" in ln for ln in header)
    assert any(str(directory / "results.json") in ln for ln in header)
    done = next(ln for ln in proc.stdout.splitlines() if ln.startswith("done: "))
    assert "train loss" in done and "->" in done and "samples/s" in done and "peak" in done and done.endswith("s")
    log = (directory / "run.log").read_text()
    assert done in log and all(ln in log for ln in header) and "tokenized sst2/train" in log


def test_sweep_prints_a_summary_table(tmp_path):
    proc = run_cli(["-m", "model=tiny_bert", "trainer.max_train_samples=32", "trainer.batch_size=8",
                    "trainer.max_eval_samples=16", "trainer.epochs=1", "trainer.max_len=32", f"run.root={tmp_path}/out",
                    "trainer.lr=1e-3,1e30", "trainer.log_every=1"], cwd=tmp_path)
    assert proc.returncode == 1
    assert "sweep: 2 jobs — 1 completed, 0 skipped, 1 failed, 0 refused" in proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("  completed") or ln.startswith("  failed")]
    assert len(rows) == 2 and "lr=1e+30" in next(r for r in rows if r.startswith("  failed"))
