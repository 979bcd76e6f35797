"""Tables for a paper: readable method names (one mapping, names.py), columns labelled with their metric, one number
format per kind of number, right-aligned numbers in LaTeX, optional LR / Gap / Failed columns, `--experiment`,
and CSV output."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from spafit_exp.report import names, tables

FIXTURES = Path(__file__).parent / "fixtures" / "tables"


def _record(root: Path, tag: str, task: str, seed: int, score: float, lr: float = 1e-3, experiment: str = "e",
            main: str = "accuracy", trainable: int = 1000, status: str = "completed", train: float | None = None):
    best = {"epoch": 1, "dev": {main: score}} | ({"train": {main: train}} if train is not None else {})
    record = {"schema": 1, "status": status, "experiment": experiment, "task": task, "method": tag,
              "method_tag": tag, "selector": "none", "model": "minilm", "lr": lr, "seed": seed, "main_metric": main,
              "params": {"trainable": trainable, "total": 22_700_000}, "config": {}, "provenance": {"git_sha": "abc"}}
    if status == "completed":
        record["metrics"] = {"best": best}
    path = root / experiment / task / tag / "minilm" / f"lr={lr}" / f"seed={seed}" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


def test_method_tags_map_to_display_names():
    assert names.method_name("lora-II-r64") == "LoRA-II (r=64)"
    assert names.method_name("lora-qv-r4") == "LoRA-qv (r=4)"
    assert names.method_name("full_ft") == "Full FT" and names.method_name("full_bitfit") == "BitFit"
    assert names.method_name("spafit-4-9-I") == "SPAFIT-4-9-I"
    assert names.method_name("full_ft_l1-0.01") == "Full FT + L1 (0.01)"
    assert names.method_name("subset-magnitude") == "Magnitude subset"
    assert names.method_name("subset-random-f0.001") == "Random subset (f=0.001)"
    assert names.method_name("sst2:full_ft") == "Full FT (from sst2)"
    assert names.method_name("none:pretrained") == "Pretrained"
    assert names.method_name("my_new_method") == "my_new_method"  # unknown: printed as itself, never hidden
    tags = ["full_ft", "full_bitfit", "lora-I-r64", "lora-II-r64", "lora-qv-r4", "spafit-1-2-II", "spafit-4-9-I",
            "stoc_tuning", "top_tuning", "random_tuning", "dps_mix", "frozen", "multi_head", "full_ft_l1-0.1",
            "full_ft_l2-0.1", *[f"subset-{s}" for s in names.SELECTORS]]
    assert len({names.method_name(t) for t in tags}) == len(tags)  # distinct rows stay distinct


def test_columns_name_their_metric_and_rows_their_method(tmp_path):
    for seed, (f1, acc) in enumerate([(0.85, 0.60), (0.87, 0.62)], 1):
        _record(tmp_path, "lora-II-r64", "mrpc", seed, f1, main="f1")
        _record(tmp_path, "lora-II-r64", "cola", seed, acc, main="mcc")
        _record(tmp_path, "full_ft", "mrpc", seed, f1 + 0.01, main="f1", trainable=22_713_218)
    table = tables.build_table("e", tables.select_lr(tables.collect(tmp_path)))
    assert list(table.columns) == ["Model", "Method", "Params (M)", "CoLA (MCC)", "MRPC (F1)", "Avg.", "Failed"]
    assert table.Method.tolist() == ["Full FT", "LoRA-II (r=64)"]  # full FT first: the reference row
    assert table["Params (M)"].tolist() == ["22.7", "0.001"]  # three significant digits, no exponent
    assert table.loc[1, "MRPC (F1)"] == "86.0 ± 1.4 @0.001"


def test_latex_right_aligns_numbers(tmp_path):
    assert tables.main(["--root", str(FIXTURES / "runs"), "--out", str(tmp_path), "--plots", str(tmp_path / "p")]) == 0
    latex = (tmp_path / "golden.tex").read_text()
    assert "\\begin{tabular}{llrrrrr}" in latex  # Model, Method left; Params, MRPC, RTE, Avg., Failed right
    assert "Full FT & 22.7 &" in latex and "LoRA-I (r=8)" in latex


def _lr_table(tmp_path, *args) -> pd.DataFrame:
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    assert tables.main(["--root", str(tmp_path / "runs"), "--out", str(tmp_path / "t"), "--plots",
                        str(tmp_path / "p"), "--format", "csv", "md", *args]) == 0
    return pd.read_csv(tmp_path / "t" / "golden.csv", dtype=str, keep_default_na=False)


def test_lr_in_its_own_columns_or_left_out(tmp_path):
    table = _lr_table(tmp_path / "column", "--lr", "column").set_index("Method")
    assert list(table.columns) == ["Model", "Params (M)", "MRPC (F1)", "RTE (Acc)", "Avg.", "LR MRPC", "LR RTE",
                                   "Failed"]
    assert table.loc["Full FT", "MRPC (F1)"] == "85.0 ± 1.4" and table.loc["Full FT", "LR MRPC"] == "6e-05†"
    assert table.loc["LoRA-I (r=8)", "RTE (Acc)"] == "60.0 (n=1)"  # the cell's own marks stay with the score
    assert table.loc["LoRA-I (r=8)", "LR MRPC"] == "—"
    assert "chosen LR (LR <task> columns; † = LR at the edge" in (tmp_path / "column" / "t" / "golden.md").read_text()
    table = _lr_table(tmp_path / "none", "--lr", "none")
    assert not any("LR" in c for c in table.columns) and not table.apply(lambda c: c.str.contains("@|†")).any().any()
    assert "chosen LR (n = seeds when fewer" in (tmp_path / "none" / "t" / "golden.md").read_text()  # no @lr, no †


def test_gap_and_failed_columns_are_optional(tmp_path):
    for seed in (1, 2):
        _record(tmp_path, "full_ft", "rte", seed, 0.7, train=0.9)
    _record(tmp_path, "full_ft", "rte", 3, None, status="failed")
    table = tables.build_table("e", tables.select_lr(tables.collect(tmp_path)))
    assert table.loc[0, "Gap"] == "-20.0" and table.loc[0, "Failed"] == "1"
    plain = tables.build_table("e", tables.select_lr(tables.collect(tmp_path)),
                               view=tables.View(gap=False, failed=False))
    assert list(plain.columns) == ["Model", "Method", "Params (M)", "RTE (Acc)", "Avg."]
    out = tmp_path / "t"
    assert tables.main(["--root", str(tmp_path), "--out", str(out), "--plots", str(tmp_path / "p"),
                        "--no-gap", "--no-failed"]) == 0
    header = (out / "e.md").read_text().splitlines()[2]
    assert "Gap" not in header and "Failed" not in header and "RTE (Acc)" in header
    assert "Gap =" not in (out / "e.md").read_text()  # nor in the footer


def test_experiment_filter(tmp_path, capsys):
    for experiment in ("a", "b"):
        for tag in ("full_ft", "full_bitfit"):
            _record(tmp_path, tag, "rte", 1, 0.7, experiment=experiment)
    out, plots = tmp_path / "t", tmp_path / "p"
    assert tables.main(["--root", str(tmp_path), "--out", str(out), "--plots", str(plots), "--experiment", "b"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["b.md", "b.tex"]
    assert [p.name for p in plots.iterdir()] == ["b"]
    capsys.readouterr()
    shutil.rmtree(out)
    shutil.rmtree(plots)
    assert tables.main(["--root", str(tmp_path), "--out", str(out), "--plots", str(plots), "--experiment", "c"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --experiment=c: no records of that experiment; choose from a, b"
    assert not out.exists() and not plots.exists()  # nothing written


def test_csv_output_holds_the_printed_table(tmp_path):
    for seed, score in [(1, 0.80), (2, 0.81), (3, 0.79)]:
        _record(tmp_path, "full_ft", "rte", seed, score, experiment="stoc_table1")
        _record(tmp_path, "lora-I-r64", "rte", seed, score - 0.1, experiment="stoc_table1")
    out = tmp_path / "t"
    assert tables.main(["--root", str(tmp_path), "--out", str(out), "--plots", str(tmp_path / "p"),
                        "--format", "md", "csv"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["stoc_table1.csv", "stoc_table1.md"]
    csv = pd.read_csv(out / "stoc_table1.csv", dtype=str, keep_default_na=False)
    markdown = (out / "stoc_table1.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| Model"))
    assert list(csv.columns) == [c.strip() for c in header.strip("|").split("|")]
    assert csv.Method.tolist() == ["Full FT", "LoRA-I (r=64)"]
    assert csv.loc[0, "RTE (Acc)"] == "80.0 ± 1.0 @0.001"  # bold (the significance mark) in md only
    assert "**80.0 ± 1.0 @0.001**" in markdown


@pytest.mark.parametrize("value", ["xlsx", ""])
def test_unknown_format_is_refused(tmp_path, value, capsys):
    _record(tmp_path, "full_ft", "rte", 1, 0.7)
    with pytest.raises(SystemExit) as exit_info:
        tables.main(["--root", str(tmp_path), "--out", str(tmp_path / "t"), "--format", value])
    assert exit_info.value.code == 2 and not (tmp_path / "t").exists()
    assert re.search(r"error: argument --format: invalid choice", capsys.readouterr().err)
