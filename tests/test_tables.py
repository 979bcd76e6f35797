"""make tables: golden Markdown from hand-written records, LR selection, edge marks, failures, layouts, plots."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spafit_exp.core.errors import ConfigError
from spafit_exp.report import tables
from spafit_exp.report.plots import pareto_front, write_plots

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
    assert list(table.columns) == ["Model", "Method", "Params (M)", "MRPC (F1)", "RTE (Acc)", "Avg.", "Failed"]
    row = table.iloc[0]
    assert row["MRPC (F1)"] == tables.MISSING and row["Avg."] == tables.MISSING and row["Failed"] == "2"
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
    assert list(table.columns) == ["Model", "Method", "Params (M)", "CoLA (MCC)", "SST-2 (Acc)", "MRPC (F1)",
                                   "STS-B (Pearson)", "QQP (Acc)", "MNLI-m (Acc)", "QNLI (Acc)", "RTE (Acc)",
                                   "WNLI (Acc)", "Avg.", "Failed"]
    row = table[table.Method == "Full FT"].iloc[0]
    assert row["CoLA (MCC)"] == tables.MISSING and row["Avg."] == tables.MISSING  # a partial sweep still tabulates
    assert row["MRPC (F1)"] == "85.0 ± 1.4 @6e-05†"


def test_a_column_can_print_two_metrics(tmp_path):
    from spafit_exp.report.layouts import Column, Layout, register

    register("two_metrics", Layout(columns=(Column("mrpc", ("f1", "accuracy"), "MRPC (F1/Acc)"),)))
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    for path in (tmp_path / "runs").rglob("results.json"):
        record = json.loads(path.read_text())
        record["experiment"] = "two_metrics"
        path.write_text(json.dumps(record))
    row = tables.build_table("two_metrics", _cells(tmp_path / "runs")).set_index("Method").loc["Full FT"]
    assert row["MRPC (F1/Acc)"] == "85.0 ± 1.4 @6e-05† / 80.0 ± 1.4"


def test_average_over_complete_rows_and_other_layouts(tmp_path):
    tasks = [("conll2003", "entity_f1", 0.9), ("qnli", "accuracy", 0.8), ("sst2", "accuracy", 0.7),
             ("trec6", "accuracy", 0.6)]
    for task, metric, score in tasks:
        _record(tmp_path, score, experiment="subset_table1", task=task, main_metric=metric)
    table = tables.build_table("subset_table1", _cells(tmp_path))
    assert list(table.columns[3:]) == ["CoNLL (F1)", "QNLI (Acc)", "SST-2 (Acc)", "TREC-6 (Acc)", "Avg.", "Failed"]
    assert table.iloc[0]["Avg."] == "75.0"
    stoc = tables.build_table("stoc_table1", _cells(tmp_path))
    assert list(stoc.columns[3:]) == ["CoLA (MCC)", "SST-2 (Acc)", "MRPC (F1)", "STS-B (Spearman)", "QNLI (Acc)",
                                      "RTE (Acc)", "Avg.", "Failed"]


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
    assert table.iloc[0].tolist() == ["SST-2", "Random", "70.0 @0.001", "75.0 @0.001", "80.0 @0.0001†", "0"]
    paths = tables.main(["--root", str(tmp_path), "--out", str(tmp_path / "t"), "--plots", str(tmp_path / "p")])
    assert paths == 0 and (tmp_path / "p" / "subset_sizes" / "lr_vs_subset_size.pdf").is_file()

    ranks = tmp_path / "ranks"
    for r, score in [(16, 0.6), (2, 0.7), (1, 0.8)]:
        _record(ranks, score, experiment="lora_ranks", method="lora", method_tag=f"lora-I-r{r}",
                config={"method": {"name": "lora", "r": r}})
    table = tables.build_ablation("lora_ranks", _cells(ranks))
    assert table.Rank.tolist() == ["1", "2", "16"] and table["RTE (Acc)"].tolist() == ["80.0 @0.001", "70.0 @0.001",
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
    from spafit_exp.sweep.lr_search import extend_grid

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
    assert row["TREC-6 (Acc)"].startswith("60.0") and row["Gap"] == "-35.0"
    assert "test for TREC-6 (epochs and LRs chosen on dev)" in tables.footer(tables.collect(tmp_path), cells)


def test_sweep_names_edge_cells_with_the_command_that_extends_them(tmp_path):
    """After a -m sweep: a cell whose best rate is the largest tried gets the command for the next rate (same log
    step): its runs' own stored overrides with only the rate changed; an interior cell gets none; a cell whose
    records keep no overrides (older records) gets the rate alone (tests/test_suggested_commands.py runs them)."""
    from spafit_exp.sweep.lr_search import edge_commands

    for lr, score in [(1e-3, 0.5), (2e-3, 0.6), (5e-3, 0.7)]:  # best at the upper edge
        job = ["experiment=subset_table1", f"trainer.lr={lr}", "task=trec6", "selector=random", "trainer.seed=1"]
        _record(tmp_path / "e", score, task="trec6", lr=lr, method="subset", selector="random", method_tag="subset-random",
                config={"run": {"overrides": job}})
        _record(tmp_path / "e", score, task="mrpc", lr=lr)
    for lr, score in [(1e-3, 0.5), (2e-3, 0.9), (5e-3, 0.7)]:  # interior
        _record(tmp_path / "e", score, task="rte", lr=lr)
    lines = edge_commands(tmp_path / "e", ["-m", "experiment=subset_table1", "trainer.lr=1e-3,2e-3,5e-3",
                                           "task=trec6,rte", "trainer.seed=1,2", "hydra.launcher.n_jobs=2"])
    assert lines == ["edge: mrpc / m / x: best lr 0.005 at the upper edge of 3 rates; next rate: trainer.lr=0.0125 "
                     "(the cell's records keep no command line: add it to the command that ran them)",
                     "edge: trec6 / subset-random / x: best lr 0.005 at the upper edge of 3 rates; extend: "
                     "python -m spafit_exp -m experiment=subset_table1 task=trec6 selector=random trainer.seed=1 "
                     "hydra.launcher.n_jobs=2 trainer.lr=0.0125"]


def _damaged(root: Path, where: str, **fields) -> Path:
    """A completed record at `root/where` with `fields` planted in it (values that would be no valid path)."""
    good = json.loads(_record(root / ".template", 0.5).read_text())
    shutil.rmtree(root / ".template")
    path = root / where / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(good | fields))  # json writes float("inf") as Infinity, as a damaged record has it
    return path


def test_non_finite_score_counts_as_failed_and_never_wins(tmp_path, capsys):
    from spafit_exp.sweep.lr_search import extend_grid

    for lr, score in [(1e-3, 0.7), (2e-3, 0.6)]:
        _record(tmp_path, score, lr=lr)
    inf = _record(tmp_path, float("inf"), lr=5e-3)
    nan = _record(tmp_path, float("nan"), lr=5e-3, seed=2)
    assert "Infinity" in inf.read_text() and "NaN" in nan.read_text()
    cell = _cells(tmp_path).iloc[0]
    assert cell["lr"] == 1e-3 and cell["mean.accuracy"] == pytest.approx(0.7)  # not the Infinity at 5e-3
    assert cell["failed"] == 2 and cell["runs"] == 4 and cell["lrs_tried"] == 2  # 5e-3 was no rate tried
    err = capsys.readouterr().err
    assert f"{inf}: non-finite score (dev accuracy=inf): counted as a failed run" in err and str(nan) in err
    assert "(2 completed, 2 failed, 0 unfinished)" in tables.footer(tables.collect(tmp_path), _cells(tmp_path))
    scores = {1e-3: 0.5, 1e-2: 0.6, 1e-1: math.inf}  # an Infinity at the upper edge must not win there either
    outcome = extend_grid([1e-3, 1e-2, 1e-1], scores.__getitem__, max_extensions=0)
    assert outcome["best_lr"] == 1e-2 and outcome["interior"]


def test_fields_of_the_wrong_type_are_skipped_with_one_warning_each(tmp_path, capsys):
    _record(tmp_path, 0.5)
    planted = [_damaged(tmp_path, "list", experiment=["e"]), _damaged(tmp_path, "timing", timing="fast"),
               _damaged(tmp_path, "lr", lr="1e-3"),
               _damaged(tmp_path, "score", metrics={"best": {"dev": {"accuracy": "0.9"}}}),
               _damaged(tmp_path, "config", config={"selector": ["random"]})]
    assert tables.main(["--root", str(tmp_path), "--out", str(tmp_path / "t"), "--plots", str(tmp_path / "p")]) == 0
    warnings = capsys.readouterr().err.splitlines()
    for path, field in zip(planted, ["experiment=['e']: must be a string", "timing: must be an object",
                                     "lr='1e-3': must be a number", "metrics.best.dev.accuracy='0.9': must be a number",
                                     "config.selector: must be an object"]):
        named = [w for w in warnings if str(path) in w]
        assert len(named) == 1 and named[0].startswith(f"warning: skipping {path}: malformed record ({field}"), named
    table = (tmp_path / "t" / "e.md").read_text()
    assert "50.0 @0.001" in table and "1 runs (1 completed" in table and "5 unreadable records skipped" in table
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["e.md", "e.tex"]


def test_fifo_or_link_named_results_json_is_skipped_not_read(tmp_path):
    """A FIFO would block `tables` for ever (run in a subprocess: a hang fails the test instead of the suite); a
    link would read a record from elsewhere as if it were this run's."""
    root = tmp_path / "runs"
    _record(root, 0.5)
    fifo = root / "fifo" / "results.json"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    elsewhere = _record(tmp_path / "elsewhere", 0.9, lr=2e-3)
    link = root / "link" / "results.json"
    link.parent.mkdir()
    link.symlink_to(elsewhere)
    proc = subprocess.run([sys.executable, "-m", "spafit_exp.tables", "--root", str(root)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(Path(tables.__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"warning: skipping {fifo}: unreadable record (OSError: not a plain file" in proc.stderr
    assert f"warning: skipping {link}: unreadable record (OSError: a symbolic link" in proc.stderr
    table = (root / "tables" / "e.md").read_text()
    assert "50.0 @0.001" in table and "90.0" not in table and "2 unreadable records skipped" in table


def test_record_fields_never_become_paths_outside_the_root(tmp_path, capsys):
    root = tmp_path / "a" / "b" / "runs"
    _record(root, 0.5)
    planted = [_damaged(root, "up", experiment="../../.."), _damaged(root, "task", task="../../../x"),
               _damaged(root, "abs", experiment=str(tmp_path / "abs")), _damaged(root, "empty", experiment="")]
    before = {p for p in tmp_path.rglob("*")}
    assert tables.main(["--root", str(root)]) == 0
    written = {p for p in tmp_path.rglob("*")} - before
    assert written and all(root in p.parents for p in written), sorted(written)
    err = capsys.readouterr().err
    assert all(f"warning: skipping {path}: malformed record (" in err for path in planted), err
    cells = _cells(root)  # as the plots get them
    with pytest.raises(ConfigError, match="experiment='../x'"):  # a frame from elsewhere is checked where written
        tables.write_tables(tables.collect(root).assign(experiment="../x"), root / "t2")
    with pytest.raises(ConfigError, match="task='../x'"):
        write_plots([("e", tables.collect(root), cells.assign(task="../x"))], root / "p2")
    assert not (root / "x.md").exists() and not (root / "x").exists()


def _generality_record(root: Path, experiment: str, task: str, tag: str, lr: float, seed: int, dev: float,
                       reported: float | None = None, train: float | None = None, decoder: float | None = None,
                       main: str = "accuracy") -> None:
    """A finished run or study record of the subset paper's section 4 (roberta_base); `reported` = its score on
    the task's test set (TREC-6: report=test), else the dev score is reported; `decoder` = a transfer's
    decoder-only score on the reported split."""
    split = "test" if task == "trec6" else "dev"
    best = {"epoch": 1, "dev": {main: dev}}
    if split == "test":
        best["test"] = {main: reported}
    if train is not None:
        best["train"] = {main: train}
    if decoder is not None:
        best[split][f"decoder_{main}"] = decoder
    record = {"schema": 1, "status": "completed", "experiment": experiment, "task": task, "method": tag,
              "method_tag": tag, "selector": "none", "model": "roberta_base", "lr": lr, "seed": seed,
              "main_metric": main, "config": {}, "metrics": {"best": best, "reported_split": split}}
    path = root / experiment / task / tag / "roberta_base" / f"lr={lr}" / f"seed={seed}" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


def test_subset_table3_golden(tmp_path):
    """Table 3 of the subset paper from hand-written Table 1 runs and study records: differences to full FT on
    the pretrained model (Prim.), to the pretrained encoder's probe (MLM) and secondary scores (Sec., decoder-only),
    and the negative train/test gap, in percentage points, mean ± std over seeds × tasks; each from the runs at the
    learning rate Table 1 (or the study's cell) chose on dev, never the higher test score of another rate."""
    def put(experiment, task, tag, lr, rows, **kw):
        for seed, values in enumerate(rows, 1):
            _generality_record(tmp_path, experiment, task, tag, lr, seed, *values, **kw)

    put("subset_table1", "trec6", "full_ft", 1e-5, [(0.90, 0.95, 0.99), (0.90, 0.97, 1.00)])  # chosen on dev
    put("subset_table1", "trec6", "full_ft", 1e-4, [(0.80, 0.99, 0.99), (0.80, 0.99, 0.99)])  # better test: unused
    put("subset_table1", "trec6", "subset-bitfit", 1e-3, [(0.85, 0.93, 0.96), (0.87, 0.95, 0.96)])
    put("subset_table1", "sst2", "full_ft", 1e-5, [(0.94, None, 0.98), (0.92, None, 0.98)])
    put("subset_table1", "sst2", "subset-bitfit", 1e-3, [(0.92, None, 0.93), (0.90, None, 0.93)])
    probe = {"main": "p_at_1"}
    put("mlm_probe", "none", "pretrained", 0.0, [(0.40,), (0.42,)], **probe)
    put("mlm_probe", "trec6", "full_ft", 1e-5, [(0.36,), (0.38,)], **probe)
    put("mlm_probe", "trec6", "full_ft", 1e-4, [(0.50,)], **probe)  # an encoder Table 1 did not choose
    put("mlm_probe", "sst2", "full_ft", 1e-5, [(0.35,), (0.35,)], **probe)
    put("mlm_probe", "trec6", "subset-bitfit", 1e-3, [(0.30,), (0.32,)], **probe)  # no SST-2 probe: (1/2)
    put("transfer", "trec6", "none:pretrained", 2e-5, [(0.91, 0.96, None, 0.80)] * 2)  # the search's best rate
    put("transfer", "trec6", "none:pretrained", 1e-5, [(0.85, 0.99, None, 0.99)] * 2)
    put("transfer", "sst2", "none:pretrained", 2e-5, [(0.93, None, None, 0.85)] * 2)
    put("transfer", "trec6", "sst2:full_ft", 2e-5, [(0.90, 0.95, None, 0.82), (0.90, 0.96, None, 0.84)])
    put("transfer", "sst2", "trec6:full_ft", 2e-5, [(0.92, None, None, 0.86)] * 2)
    put("transfer", "trec6", "sst2:subset-bitfit", 2e-5, [(0.90, 0.94, None, 0.70), (0.90, 0.94, None, 0.72)])

    tables.write_tables(tables.collect(tmp_path), tmp_path / "t")
    # by hand: Prim. of bitfit = mean(93-96, 95-96, 92-93, 90-93) = -2.00, sample std over the four = 1.15
    assert (tmp_path / "t" / "subset_table3.md").read_text() == (FIXTURES / "subset_table3.md").read_text()
    latex = (tmp_path / "t" / "subset_table3.tex").read_text()
    assert "\\textbf{0.00 $\\pm$ 1.15}" in latex and not {"±", "—"} & set(latex)

    shutil.rmtree(tmp_path / "mlm_probe")
    shutil.rmtree(tmp_path / "transfer")  # Table 1 alone: no study, no Table 3
    tables.write_tables(tables.collect(tmp_path), tmp_path / "t2")
    assert (tmp_path / "t2" / "subset_table1.md").is_file() and not (tmp_path / "t2" / "subset_table3.md").exists()
