"""Cost columns (`make tables ARGS=--cost`), the score-vs-peak-memory Pareto plot, and the significance marks of
the Stochastic Tuning table (Welch's t-test over seeds) on fixtures whose answer is known."""

import json
import subprocess
from pathlib import Path

import pytest
from scipy import stats

from spafit_exp import REPO_ROOT
from spafit_exp.report import significance, tables


def _record(root: Path, experiment: str, tag: str, task: str, seed: int, score: float, lr: float = 1e-3,
            trainable: int = 100, peak: float = 1.0, train_s: float = 10.0) -> None:
    record = {"schema": 1, "status": "completed", "experiment": experiment, "task": task, "method": tag,
              "method_tag": tag, "selector": "none", "model": "x", "lr": lr, "seed": seed, "main_metric": "accuracy",
              "params": {"trainable": trainable, "total": 1000}, "config": {}, "provenance": {"git_sha": "abc"},
              "metrics": {"best": {"epoch": 1, "dev": {"accuracy": score}}},
              "memory": {"peak_bytes": int(peak * 2**30)}, "timing": {"wall_s": train_s + 5, "train_s": train_s}}
    path = root / experiment / task / tag / "x" / f"lr={lr}" / f"seed={seed}" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


# Known answer at 0.05: A is best (mean 0.80); B (mean 0.79, same spread) is within noise (Welch p ≈ 0.29);
# C (0.70) and E (a constant 0.75) are not (p < 0.001, p ≈ 0.013); D has one seed: not tested.
SEEDS = {"A": [0.80, 0.81, 0.79], "B": [0.78, 0.80, 0.79], "C": [0.70, 0.71, 0.69], "E": [0.75, 0.75, 0.75],
         "D": [0.60]}


def test_welch_p_and_the_rule():
    assert significance.welch_p(SEEDS["A"], SEEDS["B"]) == pytest.approx(
        stats.ttest_ind(SEEDS["A"], SEEDS["B"], equal_var=False).pvalue)
    assert significance.welch_p(SEEDS["A"], SEEDS["B"]) > 0.05 > significance.welch_p(SEEDS["A"], SEEDS["E"])
    assert significance.welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0 and significance.welch_p([0.5, 0.5], [0.6, 0.6]) == 0
    assert significance.best_and_ties(SEEDS, 0.05) == {"A", "B"}
    assert significance.best_and_ties(SEEDS, 0.5) == {"A"}  # a stricter notion of "tied"
    assert significance.best_and_ties({"solo": [0.9], "A": SEEDS["A"]}) == {"solo"}  # untestable best: alone


def test_stochastic_table_marks_the_best_and_its_ties(tmp_path, capsys):
    for tag, scores in SEEDS.items():
        for seed, score in enumerate(scores, start=1):
            _record(tmp_path, "stoc_table1", tag, "rte", seed, score)
            _record(tmp_path, "stoc_table1", tag, "rte", seed, score - 0.2, lr=1e-4)  # a worse LR: not chosen
    assert tables.main(["--root", str(tmp_path), "--out", str(tmp_path / "t"), "--plots", str(tmp_path / "p")]) == 0
    markdown = (tmp_path / "t" / "stoc_table1.md").read_text()
    rows = {line.split("|")[2].strip(): line for line in markdown.splitlines() if line.startswith("| x ")}
    assert "**80.0 ± 1.0 @0.001†**" in rows["A"] and "**79.0 ± 1.0 @0.001†**" in rows["B"]
    assert "**" not in rows["C"] + rows["D"] + rows["E"]
    assert "Welch's t-test" in markdown and "p ≥ 0.05" in markdown
    latex = (tmp_path / "t" / "stoc_table1.tex").read_text()
    assert latex.count("\\textbf{") == 2 and "**" not in latex
    # stricter level from the command line; 0 turns the marks off
    tables.main(["--root", str(tmp_path), "--out", str(tmp_path / "t"), "--plots", str(tmp_path / "p"),
                 "--significance", "0.5"])
    assert (tmp_path / "t" / "stoc_table1.md").read_text().count("**") == 2
    tables.main(["--root", str(tmp_path), "--out", str(tmp_path / "t"), "--plots", str(tmp_path / "p"),
                 "--significance", "0"])
    assert "**" not in (tmp_path / "t" / "stoc_table1.md").read_text()


def test_cost_columns_and_memory_pareto(tmp_path):
    for task, ft_time in [("rte", 100.0), ("mrpc", 40.0)]:
        for seed in (1, 2):
            _record(tmp_path, "e", "full_ft", task, seed, 0.7, trainable=1000, peak=3.0 + seed, train_s=ft_time)
            _record(tmp_path, "e", "bitfit", task, seed, 0.65, trainable=1, peak=1.5, train_s=ft_time / 4)
    out = subprocess.run(["make", "-s", "tables", f"ARGS=--cost --root {tmp_path} --out {tmp_path}/t "
                          f"--plots {tmp_path}/p"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    markdown = (tmp_path / "t" / "e.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in header.split("|")[4:7]] == ["Trainable (%)", "Peak mem (GiB)", "Time (× FT)"]
    cells = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[4:7]]
             for line in markdown.splitlines() if line.startswith("| x ")}
    assert cells["Full FT"] == ["100", "5.00", "1.00"]  # peak: the largest of the row's runs
    assert cells["bitfit"] == ["0.1", "1.50", "0.25"]
    assert "Costs: Trainable (%)" in markdown and "Time (× FT)" in out.stdout
    assert "\\times" in (tmp_path / "t" / "e.tex").read_text()
    for name in ["pareto_rte", "pareto_memory_rte", "pareto_memory_mrpc"]:
        assert (tmp_path / "p" / "e" / f"{name}.png").stat().st_size > 0
    tables.main(["--root", str(tmp_path), "--out", str(tmp_path / "plain"), "--plots", str(tmp_path / "p")])
    assert "Peak mem" not in (tmp_path / "plain" / "e.md").read_text()  # cost columns only when asked
