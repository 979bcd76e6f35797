"""Planning a sweep and building tables need no model library: `python -m spafit_exp.sweep plan …` and
`python -m spafit_exp.tables` are run as their entry points (runpy, as `-m` does) in a fresh interpreter, and
`sys.modules` is read afterwards. A watch that cannot fail is no watch: the same harness sees torch when the
run CLI is imported. The other way round, a single run imports no table library."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "tables"
HEAVY = ("torch", "transformers", "accelerate", "peft", "datasets")
TABLES = ("spafit_exp.report", "matplotlib")  # (pandas comes with datasets, which a run needs)
WATCH = ("import json, runpy, sys\n"
         "libraries = json.loads(sys.argv[1])\n"
         "module, *argv = sys.argv[2:]\n"
         "sys.argv = [module, *argv]\n"
         "try:\n"
         "    runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
         "except SystemExit as stop:\n"
         "    code = stop.code\n"
         "print('HEAVY ' + json.dumps(sorted({lib for lib in libraries for m in sys.modules\n"
         "                                     if m == lib or m.startswith(lib + '.')})))\n")


def heavy_modules(tmp_path: Path, *argv: str, libraries=HEAVY) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", WATCH, json.dumps(libraries), *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("HEAVY ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(lines[-1][len("HEAVY "):])


def test_sweep_plan_imports_no_model_library(tmp_path):
    assert heavy_modules(tmp_path, "spafit_exp.sweep", "plan", "-m", "method=lora,full_ft", "task=rte,mrpc",
                         f"run.root={tmp_path}") == []


def test_sweep_status_imports_no_model_library(tmp_path):
    assert heavy_modules(tmp_path, "spafit_exp.sweep", "status", "-m", "method=lora", "task=rte",
                         f"run.root={FIXTURES / 'runs'}") == []


def test_tables_import_no_model_library(tmp_path):
    assert heavy_modules(tmp_path, "spafit_exp.tables", "--root", str(FIXTURES / "runs"), "--out",
                         str(tmp_path / "t"), "--plots", str(tmp_path / "p")) == []
    assert (tmp_path / "t").is_dir()  # the tables were built, not refused


def test_a_run_imports_no_table_library(tmp_path):
    """The run CLI reaches the learning-rate edge check (sweep/lr_search -> report/cells) only after a `-m`
    sweep: a single run (here a dry run) loads neither the table code nor its plotting library."""
    assert heavy_modules(tmp_path, "spafit_exp", "model=tiny_bert", "trainer.dry_run=true",
                         f"run.root={tmp_path}", libraries=TABLES) == []


@pytest.mark.parametrize("module", ["spafit_exp.run.app"])
def test_the_watch_sees_torch(tmp_path, module):
    code = f"import {module}, sys; print('HEAVY', 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "HEAVY True" in proc.stdout, proc.stderr[-2000:]
