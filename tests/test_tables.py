"""make tables: golden Markdown from hand-written records, LR selection, edge marks, failures, layouts, plots."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spafit_exp import tables
from spafit_exp.plots import pareto_front

FIXTURES = Path(__file__).parent / "fixtures" / "tables"


def _record(root: Path, score: float | None = None, status: str = "completed", **fields) -> Path:
    """One results.json; fields override the defaults (experiment e, task rte, method m, model x, lr 1e-3)."""
    record = {"schema": 1, "status": status, "experiment": "e", "task": "rte", "method": "m", "method_tag": "m",
              "selector": "none", "model": "x", "lr": 1e-3, "seed": 1, "main_metric": "accuracy",
              "params": {"trainable": 10, "total": 100}, "config": {}, "provenance": {"git_sha": "abc"}}
    record.update(fields)
    if status == "completed":
        record["metrics"] = {"best": {"epoch": 1, "dev": {record["main_metric"]: score}}}
    path = root / record["experiment"] / record["task"] / record["method_tag"] / record["model"] / \
        f"lr={record['lr']}" / f"seed={record['seed']}" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    return path


def _cells(root: Path):
    return tables.select_lr(tables.collect(root))


def test_golden_markdown(tmp_path, capsys):
    out, plots = tmp_path / "t", tmp_path / "p"
    assert tables.main(["--root", str(FIXTURES / "runs"), "--out", str(out), "--plots", str(plots)]) == 0
    expected = (FIXTURES / "golden.md").read_text()
    assert (out / "golden.md").read_text() == expected
    assert expected in capsys.readouterr().out  # also printed
    latex = (out / "golden.tex").read_text()
    assert "\\begin{tabular}" in latex and "$\\pm$" in latex and "$^\\dagger$" in latex
    assert not {"±", "†", "—"} & set(latex)


def test_plots_written(tmp_path):
    tables.main(["--root", str(FIXTURES / "runs"), "--out", str(tmp_path / "t"), "--plots", str(tmp_path / "p")])
    for name in ["pareto_rte", "pareto_mrpc", "lr_curves_rte", "lr_curves_mrpc"]:
        for suffix in [".png", ".pdf"]:
            assert (tmp_path / "p" / "golden" / (name + suffix)).stat().st_size > 0


def test_fixture_choices_edges_and_failures():
    cells = _cells(FIXTURES / "runs").set_index(["task", "method_tag"])
    rte = cells.loc[("rte", "full_ft")]
    assert rte["lr"] == 2e-05 and not rte["edge"]  # 0.61 beats 0.56 (1e-05) and 0.57 (6e-05): interior
    mrpc = cells.loc[("mrpc", "full_ft")]
    assert mrpc["lr"] == 6e-05 and mrpc["edge"]  # the unfinished 1e-04 run does not widen the grid
    assert mrpc["failed"] == 1 and mrpc["seeds"] == 2
    bitfit = cells.loc[("mrpc", "full_bitfit")]
    assert bitfit["failed"] == 1 and bitfit["seeds"] == 2 and bitfit["mean.f1"] == pytest.approx(0.80)
    assert bitfit["mean.accuracy"] == pytest.approx(0.75) and bitfit["std.f1"] == pytest.approx(0.01 * 2 ** 0.5)


def test_lr_chosen_by_mean_over_seeds_not_best_run(tmp_path):
    for seed, score in [(1, 0.9), (2, 0.3)]:  # best single run, mean 0.6
        _record(tmp_path, score, lr=1e-4, seed=seed)
    for seed, score in [(1, 0.7), (2, 0.7)]:  # mean 0.7
        _record(tmp_path, score, lr=1e-3, seed=seed)
    _record(tmp_path, status="failed", lr=1e-2, seed=1, error="RuntimeError: CUDA OOM")
    cell = _cells(tmp_path).iloc[0]
    assert cell["lr"] == 1e-3 and cell["mean.accuracy"] == pytest.approx(0.7) and cell["std.accuracy"] == 0
    assert cell["edge"] and cell["failed"] == 1 and cell["runs"] == 5
    assert tables.fmt(cell, "accuracy") == "70.0 ± 0.0 @0.001†"


def test_edge_marks_and_interior_choice(tmp_path):
    for lr, score in [(1e-4, 0.5), (1e-3, 0.7), (1e-2, 0.6)]:
        _record(tmp_path, score, lr=lr)
    cell = _cells(tmp_path).iloc[0]
    assert cell["lr"] == 1e-3 and not cell["edge"]
    assert tables.fmt(cell, "accuracy") == "70.0 @0.001"  # one seed: no ± std
    _record(tmp_path, 0.9, lr=1e-1)
    cell = _cells(tmp_path).iloc[0]
    assert cell["lr"] == 1e-1 and cell["edge"] and tables.fmt(cell, "accuracy").endswith("@0.1" + tables.EDGE)
    single = tmp_path / "single"
    _record(single, 0.5, lr=1e-3)
    assert not _cells(single).iloc[0]["edge"]  # one LR tried: no grid, no edge


def test_failed_only_cell_and_footer(tmp_path):
    _record(tmp_path, 0.5, task="rte")
    _record(tmp_path, status="failed", task="mrpc", main_metric="f1")
    _record(tmp_path, status="running", task="mrpc", main_metric="f1", seed=2)
    cells = _cells(tmp_path)
    table = tables.build_table("e", cells)
    assert list(table.columns) == ["Model", "Method", "Params (M)", "MRPC", "RTE", "Avg.", "Failed"]
    row = table.iloc[0]
    assert row["MRPC"] == tables.MISSING and row["Avg."] == tables.MISSING and row["Failed"] == "2"
    note = tables.footer(tables.collect(tmp_path), cells)
    assert note.startswith("3 runs (1 completed, 1 failed, 1 unfinished); seeds: 1, 2; git: abc.")


def test_spafit_table2_layout(tmp_path):
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    for path in (tmp_path / "runs").rglob("results.json"):
        record = json.loads(path.read_text())
        record["experiment"] = "spafit_table2"
        path.write_text(json.dumps(record))
    table = tables.build_table("spafit_table2", _cells(tmp_path / "runs"))
    # one number per task, as the paper's Table 2 prints it
    assert list(table.columns) == ["Model", "Method", "Params (M)", "CoLA (MCC)", "SST-2", "MRPC (F1)",
                                   "STS-B (Pearson)", "QQP (Acc)", "MNLI (m)", "QNLI", "RTE", "WNLI",
                                   "Avg.", "Failed"]
    row = table[table.Method == "full_ft"].iloc[0]
    assert row["CoLA (MCC)"] == tables.MISSING and row["Avg."] == tables.MISSING  # a partial sweep still tabulates
    assert row["MRPC (F1)"] == "85.0 ± 1.4 @6e-05†"


def test_a_column_can_print_two_metrics(tmp_path):
    from spafit_exp.layouts import Column, Layout, register

    register("two_metrics", Layout(columns=(Column("mrpc", ("f1", "accuracy"), "MRPC (F1/Acc)"),)))
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    for path in (tmp_path / "runs").rglob("results.json"):
        record = json.loads(path.read_text())
        record["experiment"] = "two_metrics"
        path.write_text(json.dumps(record))
    row = tables.build_table("two_metrics", _cells(tmp_path / "runs")).set_index("Method").loc["full_ft"]
    assert row["MRPC (F1/Acc)"] == "85.0 ± 1.4 @6e-05† / 80.0 ± 1.4"


def test_average_over_complete_rows_and_other_layouts(tmp_path):
    tasks = [("conll2003", "entity_f1", 0.9), ("qnli", "accuracy", 0.8), ("sst2", "accuracy", 0.7),
             ("trec6", "accuracy", 0.6)]
    for task, metric, score in tasks:
        _record(tmp_path, score, experiment="subset_table1", task=task, main_metric=metric)
    table = tables.build_table("subset_table1", _cells(tmp_path))
    assert list(table.columns[3:]) == ["CoNLL (F1)", "QNLI", "SST-2", "TREC-6", "Avg.", "Failed"]
    assert table.iloc[0]["Avg."] == "75.0"
    stoc = tables.build_table("stoc_table1", _cells(tmp_path))
    assert list(stoc.columns[3:]) == ["CoLA (MCC)", "SST-2", "MRPC (F1)", "STS-B (Spearman)", "QNLI", "RTE", "Avg.",
                                      "Failed"]


def test_subset_size_and_rank_ablations(tmp_path):
    for fraction, lr, score in [(1e-1, 1e-4, 0.8), (1e-3, 1e-3, 0.7), (1e-2, 1e-3, 0.75)]:
        tag = f"subset-random-f{fraction}"
        for other_lr in [1e-4, 1e-3, 1e-2]:
            _record(tmp_path, score if other_lr == lr else 0.5, experiment="subset_sizes", task="sst2",
                    method="subset", method_tag=tag, selector="random", lr=other_lr,
                    config={"selector": {"name": "random", "fraction": fraction}})
    cells = _cells(tmp_path)
    table = tables.build_ablation("subset_sizes", cells)
    assert list(table.columns) == ["Task", "Selector", "0.001", "0.01", "0.1", "Failed"]  # numeric order
    assert table.iloc[0].tolist() == ["SST-2", "random", "70.0 @0.001", "75.0 @0.001", "80.0 @0.0001†", "0"]
    paths = tables.main(["--root", str(tmp_path), "--out", str(tmp_path / "t"), "--plots", str(tmp_path / "p")])
    assert paths == 0 and (tmp_path / "p" / "subset_sizes" / "lr_vs_subset_size.pdf").is_file()

    ranks = tmp_path / "ranks"
    for r, score in [(16, 0.6), (2, 0.7), (1, 0.8)]:
        _record(ranks, score, experiment="lora_ranks", method="lora", method_tag=f"lora-I-r{r}",
                config={"method": {"name": "lora", "r": r}})
    table = tables.build_ablation("lora_ranks", _cells(ranks))
    assert table.Rank.tolist() == ["1", "2", "16"] and table.RTE.tolist() == ["80.0 @0.001", "70.0 @0.001",
                                                                              "60.0 @0.001"]


def test_empty_root_is_not_an_error(tmp_path, capsys):
    assert tables.main(["--root", str(tmp_path / "outputs")]) == 0
    assert capsys.readouterr().out.strip() == f"no results under {tmp_path / 'outputs'}/"
    (tmp_path / "outputs").mkdir()
    assert tables.main(["--root", str(tmp_path / "outputs")]) == 0
    assert "no results under" in capsys.readouterr().out
    assert not (tmp_path / "outputs" / "tables").exists()


def test_cli_default_root(tmp_path):
    run = subprocess.run([sys.executable, "-m", "spafit_exp.tables"], cwd=tmp_path, capture_output=True, text=True,
                         env=os.environ | {"PYTHONPATH": str(Path(tables.__file__).parents[1])}, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "no results under outputs/"


def test_corrupt_record_is_skipped(tmp_path, capsys):
    _record(tmp_path, 0.5)
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    for name, text in [("list", "[1, 2]"), ("odd", '{"metrics": [1]}'), ("binary", b"\xff\xfe")]:
        (tmp_path / name).mkdir()
        path = tmp_path / name / "results.json"
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    df = tables.collect(tmp_path)
    err = capsys.readouterr().err
    assert len(df) == 1 and f"skipping {bad}" in err and "not a JSON object" in err and err.count("skipping") == 4
    assert tables.main(["--root", str(tmp_path), "--out", str(tmp_path / "t"), "--plots", str(tmp_path / "p")]) == 0
    assert "4 unreadable records skipped" in (tmp_path / "t" / "e.md").read_text()  # in the footer too


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex")
def test_latex_fragment_compiles(tmp_path):
    tables.main(["--root", str(FIXTURES / "runs"), "--out", str(tmp_path), "--plots", str(tmp_path / "p")])
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                      "\\input{golden.tex}\n\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]


def test_pareto_front():
    assert pareto_front([(10, 50.0), (100, 60.0), (50, 40.0), (1000, 55.0)]) == [(10, 50.0), (100, 60.0)]
    assert pareto_front([(10, 50.0), (10, 55.0)]) == [(10, 55.0)]


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


def test_reported_test_split_selection_on_dev_and_gap_sign(tmp_path):
    """A task with a labelled test set (CoNLL, TREC-6): the LR is chosen on dev, the cell prints test, the footer
    says so, and Gap is test minus train (the subset paper's sign)."""
    for lr, dev, test in [(1e-3, 0.80, 0.70), (2e-3, 0.90, 0.60)]:
        path = _record(tmp_path, dev, task="trec6", lr=lr)
        record = json.loads(path.read_text())
        record["metrics"]["best"].update(test={"accuracy": test}, train={"accuracy": 0.95})
        record["metrics"]["reported_split"] = "test"
        path.write_text(json.dumps(record))
    cells = _cells(tmp_path)
    cell = cells.iloc[0]
    assert cell["lr"] == 2e-3 and cell["reported_split"] == "test"  # chosen on dev (0.90), not test (0.70)
    assert cell["mean.accuracy"] == pytest.approx(0.60) and cell["mean.dev.accuracy"] == pytest.approx(0.90)
    row = tables.build_table("e", cells).iloc[0]
    assert row["TREC-6"].startswith("60.0") and row["Gap"] == "-35.0"
    assert "test for TREC-6 (epochs and LRs chosen on dev)" in tables.footer(tables.collect(tmp_path), cells)


def test_sweep_names_edge_cells_with_the_command_that_extends_them(tmp_path):
    """After a -m sweep: a cell whose best rate is the largest tried gets the command for the next rate (same log
    step), narrowed to the cell; an interior cell gets none."""
    from spafit_exp.lr_search import edge_commands

    for lr, score in [(1e-3, 0.5), (2e-3, 0.6), (5e-3, 0.7)]:  # best at the upper edge
        _record(tmp_path / "e", score, task="trec6", lr=lr, method="subset", selector="random", method_tag="subset-random")
    for lr, score in [(1e-3, 0.5), (2e-3, 0.9), (5e-3, 0.7)]:  # interior
        _record(tmp_path / "e", score, task="rte", lr=lr)
    lines = edge_commands(tmp_path / "e", ["-m", "experiment=subset_table1", "trainer.lr=1e-3,2e-3,5e-3",
                                           "task=trec6,rte", "trainer.seed=1,2"])
    assert lines == ["edge: trec6 / subset-random / x: best lr 0.005 at the upper edge of 3 rates; extend: "
                     "python -m spafit_exp -m experiment=subset_table1 trainer.seed=1,2 task=trec6 method=subset "
                     "model=x selector=random trainer.lr=0.0125"]
