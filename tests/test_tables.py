"""make tables: golden Markdown from hand-written records, LR selection, edge marks, failures, empty roots."""

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from spafit_exp import tables
from spafit_exp.plots import pareto_front

FIXTURES = Path(__file__).parent / "fixtures" / "tables"


def test_golden_markdown(tmp_path):
    assert tables.main(["--root", str(FIXTURES / "runs"), "--out", str(tmp_path / "t"), "--plots", str(tmp_path / "p")]) == 0
    assert (tmp_path / "t" / "golden.md").read_text() == (FIXTURES / "golden.md").read_text()
    latex = (tmp_path / "t" / "golden.tex").read_text()
    assert "\\begin{tabular}" in latex and "$\\pm$" in latex and "±" not in latex
    assert (tmp_path / "p" / "golden" / "pareto_rte.png").is_file()
    assert (tmp_path / "p" / "golden" / "pareto_mrpc.pdf").is_file()


def test_lr_chosen_by_mean_over_seeds_and_failures_counted():
    cells = tables.select_lr(tables.collect(FIXTURES / "runs")).set_index(["task", "method_tag"])
    assert cells.loc[("rte", "full_ft"), "lr"] == 2e-05  # mean 0.61 beats 0.57
    assert cells.loc[("mrpc", "full_ft"), "lr"] == 6e-05
    bitfit = cells.loc[("mrpc", "full_bitfit")]
    assert bitfit["failed"] == 1 and bitfit["seeds"] == 2 and abs(bitfit["mean.f1"] - 0.80) < 1e-9


def _record(path: Path, lr: float, seed: int, score: float, status: str = "completed"):
    path.mkdir(parents=True)
    dev = {"accuracy": score}
    (path / "results.json").write_text(json.dumps({
        "status": status, "experiment": "e", "task": "rte", "method": "m", "method_tag": "m", "model": "x", "lr": lr,
        "seed": seed, "main_metric": "accuracy", "params": {"trainable": 10},
        "metrics": {"best": {"epoch": 1, "dev": dev}} if status == "completed" else {}}))


def test_edge_marks_and_interior_choice(tmp_path):
    for i, (lr, score) in enumerate([(1e-4, 0.5), (1e-3, 0.7), (1e-2, 0.6)]):
        _record(tmp_path / f"r{i}", lr, 1, score)
    cell = tables.select_lr(tables.collect(tmp_path)).iloc[0]
    assert cell["lr"] == 1e-3 and not cell["edge"]
    _record(tmp_path / "r3", 1e-1, 1, 0.9)
    cell = tables.select_lr(tables.collect(tmp_path)).iloc[0]
    assert cell["lr"] == 1e-1 and cell["edge"]
    assert tables.fmt(cell, "accuracy").endswith("@0.1" + tables.EDGE)


def test_missing_cells_and_paper_layout(tmp_path):
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    for path in (tmp_path / "runs").rglob("results.json"):
        record = json.loads(path.read_text())
        record["experiment"] = "spafit_table2"
        path.write_text(json.dumps(record))
    table = tables.build_table("spafit_table2", tables.select_lr(tables.collect(tmp_path / "runs")))
    assert list(table.columns[:4]) == ["Model", "Method", "Params (M)", "CoLA (mcc)"]
    assert "MRPC (f1/accuracy)" in table.columns and "MNLI (accuracy/accuracy_mm)" in table.columns
    row = table[table.Method == "full_ft"].iloc[0]
    assert row["CoLA (mcc)"] == tables.MISSING and row["Avg."] == tables.MISSING  # a partial sweep still tabulates
    assert row["MRPC (f1/accuracy)"].startswith("85.0 ± 1.4 @6e-05") and " / 80.0 ± 1.4" in row["MRPC (f1/accuracy)"]


def test_empty_root_is_not_an_error(tmp_path, capsys):
    assert tables.main(["--root", str(tmp_path / "outputs")]) == 0
    assert "no results under" in capsys.readouterr().out


def test_corrupt_record_is_skipped(tmp_path, capsys):
    _record(tmp_path / "ok", 1e-3, 1, 0.5)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    df = tables.collect(tmp_path)
    assert len(df) == 1 and "skipping" in capsys.readouterr().err
    assert isinstance(df, pd.DataFrame)


def test_pareto_front():
    assert pareto_front([(10, 50.0), (100, 60.0), (50, 40.0), (1000, 55.0)]) == [(10, 50.0), (100, 60.0)]


def test_lr_grid_extends_until_interior():
    from spafit_exp.lr_search import extend_grid

    calls = []

    def objective(lr):  # peak at 3e-2: beyond the initial grid's upper edge
        calls.append(lr)
        return -abs(math.log10(lr) - math.log10(3e-2))

    outcome = extend_grid([1e-5, 1e-4, 1e-3], objective, max_extensions=5)
    assert outcome["interior"] and outcome["best_lr"] == pytest.approx(1e-2)
    assert outcome["extensions"] == 2 and len(calls) == 5  # 1e-2, then 1e-1 shows the peak is inside
    capped = extend_grid([1e-5, 1e-4], objective, max_extensions=1)
    assert not capped["interior"] and capped["extensions"] == 1
