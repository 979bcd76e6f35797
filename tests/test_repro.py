"""Reproductions (`python -m spafit_exp.repro PAPER`, docs/reproductions.md): the published numbers are the
papers', the claims' verdicts follow their tests, `--scale paper --plan` counts the runs `sweep plan` counts, every
cpu-scale row is a valid run, bad input is one line, and `--scale tiny` of each paper writes every section of its
report, continues from its records when run again, and rebuilds the report from the records alone."""

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from spafit_exp import REPO_ROOT
from spafit_exp.repro import __main__ as cli
from spafit_exp.repro import claims, collect, plan, runner, spafit, stoc, subset
from spafit_exp.repro.claims import Claim, Evidence
from spafit_exp.repro.papers import PAPERS
from spafit_exp.repro.recipe import grid_rates, layout
from spafit_exp.repro.report import SECTIONS
from spafit_exp.sweep import cli as sweep

PAPERS_DIR = REPO_ROOT.parent / "shared" / "papers"


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- the published numbers are the papers'

def _numeric_rows(path: Path) -> dict[str, list[str]]:
    rows = {}
    for line in path.read_text().splitlines():
        cells = line.split("\t")
        if len(cells) > 4 and all(re.fullmatch(r"[0-9.]+( ± [0-9.]+)?", c) for c in cells[1:] if c.strip()):
            rows.setdefault(cells[0], [c for c in cells[1:] if c.strip()])
    return rows


@pytest.mark.skipif(not PAPERS_DIR.is_dir(), reason="the papers' texts are not next to the repository")
def test_published_numbers_are_the_papers_tables():
    table2 = _numeric_rows(PAPERS_DIR / "000_4154202b85b1038a.txt")
    assert set(spafit.PUBLISHED.rows) <= set(table2)
    for row, scores in spafit.PUBLISHED.rows.items():
        params, *printed = table2[row]
        assert [float(v) for v in printed] == [scores[t] for t in spafit.TASKS], row
        assert spafit.PUBLISHED.params[row] == f"{params}M", row
    table1 = _numeric_rows(PAPERS_DIR / "002_099fc82fa75dab59.txt")
    for row, scores in subset.PUBLISHED.rows.items():
        *pairs, average = table1[row]
        assert [tuple(float(x) for x in p.split("±")) for p in pairs] == \
            [(scores[t], subset.PUBLISHED.std[row][t]) for t in subset.TASKS], row
        assert float(average) == subset.PUBLISHED.average[row], row
    assert all(v is None for row in stoc.PUBLISHED.rows.values() for v in row.values())  # not in the extraction


# ---------------------------------------------------------------- claims: tests and verdicts

def _evidence(means: dict[str, dict[str, float]], spread: float = 0.005, seeds: int = 5, groups=None) -> Evidence:
    """Per-seed scores around `means` (row -> task -> mean), the same deviations for every row."""
    offsets = np.linspace(-spread, spread, seeds)
    scores = {row: {task: {s + 1: m + offsets[(s + i) % seeds] for s in range(seeds)} for task, m in tasks.items()}
              for i, (row, tasks) in enumerate(means.items())}
    return Evidence(scores=scores, groups=groups or {row: ("peft",) for row in means}, trainable={})


@pytest.mark.parametrize("gap,spread,verdict", [(0.05, 0.005, "holds"), (-0.05, 0.005, "contradicted"),
                                                (0.002, 0.05, "inconclusive")])
def test_better_claim(gap, spread, verdict):
    ev = _evidence({"a": {"rte": 0.7 + gap, "mrpc": 0.8 + gap}, "b": {"rte": 0.7, "mrpc": 0.8}}, spread)
    (result,) = claims.check(ev, [Claim("X", "a beats b", "", "better", a="a", b=("b",))])
    assert result.verdict == verdict, result


@pytest.mark.parametrize("gap,verdict", [(0.05, "holds"), (0.0, "contradicted"), (0.02, "inconclusive")])
def test_margin_claim_over_two_points(gap, verdict):
    """'More than two points better': 5 points holds, 0 points contradicts, 2 points cannot tell."""
    ev = _evidence({"a": {"rte": 0.7 + gap}, "b": {"rte": 0.7}}, spread=0.005)
    (result,) = claims.check(ev, [Claim("X", "", "", "better", a="a", b=("b",), margin=0.02)])
    assert result.verdict == verdict, result


@pytest.mark.parametrize("means,verdict", [
    ({"a": 0.90, "b": 0.80, "c": 0.70}, "holds"),         # a clearly in the top two on both tasks
    ({"a": 0.70, "b": 0.90, "c": 0.80}, "contradicted"),  # two rows clearly above a
    ({"a": 0.80, "b": 0.80, "c": 0.80}, "inconclusive"),  # a tie: neither shown
])
def test_top_two_claim(means, verdict):
    ev = _evidence({row: {"rte": m, "mrpc": m} for row, m in means.items()})
    (result,) = claims.check(ev, [Claim("X", "", "", "top", a="a", b=("*",), k=2)])
    assert result.verdict == verdict, result


@pytest.mark.parametrize("means,spread,verdict", [
    ({"a": 0.800, "b": 0.801, "c": 0.799}, 0.002, "holds"),  # within ±1 point, shown
    ({"a": 0.80, "b": 0.80, "c": 0.85}, 0.002, "contradicted"),  # c is 5 points away
    ({"a": 0.80, "b": 0.80, "c": 0.80}, 0.08, "inconclusive"),  # too noisy to show either
])
def test_similar_claim(means, spread, verdict):
    ev = _evidence({row: {"rte": m} for row, m in means.items()}, spread, groups={r: ("selector",) for r in means})
    (result,) = claims.check(ev, [Claim("X", "", "", "similar", b=("selector",), margin=0.01)])
    assert result.verdict == verdict, result


def test_worst_most_tasks_best_of_group_and_parameters():
    ev = _evidence({"ft": {"t1": 0.9, "t2": 0.9, "t3": 0.9}, "s1": {"t1": 0.85, "t2": 0.95, "t3": 0.95},
                    "s2": {"t1": 0.80, "t2": 0.80, "t3": 0.80}, "bit": {"t1": 0.5, "t2": 0.5, "t3": 0.5}},
                   groups={"ft": ("full_ft",), "s1": ("peft", "spafit"), "s2": ("peft", "spafit"), "bit": ("peft",)})
    ev.trainable = {"ft": 100.0, "s1": 5.0, "s2": 3.0, "bit": 10.0}
    found = {v.claim.id: v for v in claims.check(ev, [
        Claim("W", "", "", "worst", a="bit", b=("*",)),
        Claim("M", "", "", "most_tasks", a="best:peft", b=("ft",), margin=-0.01),
        Claim("B", "", "", "better", a="best:spafit", b=("bit",), fewer_params=True),
        Claim("P", "", "", "better", a="best:spafit", b=("s2",), fewer_params=True),  # s1 trains more than s2
        Claim("N", "", "", "better", a="best:lora", b=("bit",)),
    ])}
    assert found["W"].verdict == "holds"
    assert found["M"].verdict == "holds" and "2/3" in found["M"].numbers  # t2, t3 hold; t1 (5 points below) not
    assert found["B"].verdict == "holds" and found["B"].numbers.startswith("s1")  # the best SPAFIT row is s1
    assert found["P"].verdict == "contradicted"
    assert found["N"].verdict == "inconclusive" and "not run" in found["N"].numbers


def test_every_paper_has_at_least_four_claims_of_known_kinds():
    for paper in PAPERS.values():
        assert len(paper.claims) >= 4
        assert {c.kind for c in paper.claims} <= set(claims.KINDS)


# ---------------------------------------------------------------- synthetic records -> verdicts and the report

def _record(where, tag: str, method: str, task: str, lr: float, seed: int, score: float, model="tiny_bert") -> None:
    directory = where.runs / task / tag / model / f"lr={lr:g}" / f"seed={seed}"
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps({
        "status": "completed", "experiment": where.experiment, "task": task, "method": method, "method_tag": tag,
        "selector": "none", "model": model, "lr": lr, "seed": seed, "main_metric": "accuracy",
        "metrics": {"best": {"epoch": 1, "dev": {"accuracy": score}}, "reported_split": "dev"},
        "params": {"trainable": 10 if method != "full_ft" else 1000, "total": 1000},
        "timing": {"wall_s": 1.0, "train_s": 0.5}, "provenance": {"cpu": "Test CPU", "cpus": 2}}))


@pytest.mark.parametrize("stoc_gap,verdict", [(0.1, "holds"), (-0.1, "contradicted"), (0.0, "inconclusive")])
def test_claim_verdicts_from_synthetic_records_and_report_rebuilt_from_them(tmp_path, stoc_gap, verdict):
    """Stochastic Tuning vs full FT (claim T1) from records on disk; `--report` writes every section from them."""
    where = layout(stoc.PAPER, "tiny", tmp_path)
    noise = [0.01, -0.01, 0.02, -0.02, 0.0]
    for seed in range(1, 6):
        _record(where, "full_ft", "full_ft", "rte", 3e-5, seed, 0.6 + noise[seed - 1])
        _record(where, "stoc_tuning", "stoc_tuning", "rte", 1e-3, seed, 0.6 + stoc_gap + noise[::-1][seed - 1])
    _record(where, "stoc_tuning", "stoc_tuning", "rte", 3e-4, 1, 0.2)  # screened on seed 1 and lost
    for seed, score in zip(range(1, 5), [0.1, 1.0, 1.0, 1.0]):  # lost the screen: its other seeds never count
        _record(where, "stoc_tuning", "stoc_tuning", "rte", 1e-4, seed, score)
    scale = stoc.PAPER.scales["tiny"]
    tags, model = plan.row_tags(stoc.PAPER, scale, scale.rows, where, [])
    _, cells = collect.gather(stoc.PAPER, scale.rows, tags, scale.tasks, where.runs, screen=True, model=model)
    chosen = cells[("Stoc Tuning", "rte")]
    assert chosen.lr == pytest.approx(1e-3) and chosen.edge and sorted(chosen.scores) == [1, 2, 3, 4, 5]
    assert sorted(chosen.tried) == pytest.approx([1e-4, 3e-4, 1e-3])
    verdicts = {v.claim.id: v for v in claims.check(collect.evidence(scale.rows, cells), stoc.PAPER.claims)}
    assert verdicts["T1"].verdict == verdict, verdicts["T1"]
    code, out, _ = _main(["stoc", "--scale", "tiny", "--report", "--out", str(tmp_path)])
    text = (where.folder / "report.md").read_text()
    assert code == 0 and all(section in text for section in SECTIONS)
    (t1,) = [line for line in text.splitlines() if line.startswith("| T1 | Stochastic Tuning outperforms full fine")]
    assert t1.endswith(f"**{verdict}** |")
    assert "Test CPU" in text and "0.001†" in text  # the machine from the records; the chosen rate at the edge


def test_paper_scale_report_reads_the_presets_records_and_chooses_by_the_mean(tmp_path):
    """Scale paper: the preset's folder under run.root, every seed on every rate, the best mean (as make tables);
    launcher overrides and a narrowed task list are accepted."""
    overrides = [f"run.root={tmp_path / 'runs'}", "launcher=slurm", "hydra.launcher.partition=gpu", "task=rte,mrpc"]
    where = layout(stoc.PAPER, "paper", tmp_path / "out", overrides)
    for seed, (lucky, steady) in enumerate([(0.9, 0.5), (0.1, 0.5), (0.1, 0.5)], 1):
        _record(where, "stoc_tuning", "stoc_tuning", "rte", 1e-3, seed, lucky, "roberta_base")
        _record(where, "stoc_tuning", "stoc_tuning", "rte", 1e-4, seed, steady, "roberta_base")
    code, _, err = _main(["stoc", "--scale", "paper", "--report", "--out", str(tmp_path / "out"), *overrides])
    text = (tmp_path / "out" / "stoc-paper" / "report.md").read_text()
    assert code == 0, err
    assert "| Stoc Tuning | rte | **0.0001** (50.0), 0.001 (36.7) | 0.0001† | 3 | 0 |" in text
    assert "| Stoc Tuning | mrpc |" in text and "| Stoc Tuning | cola |" not in text


def test_paper_scale_launches_the_presets_sweeps_through_slurm(tmp_path, monkeypatch):
    launched = []
    monkeypatch.setattr(cli.subprocess, "run", lambda command: launched.append(command[1:]) or
                        type("Done", (), {"returncode": 0})())
    code, out, err = _main(["subset", "--scale", "paper", "--out", str(tmp_path), f"run.root={tmp_path / 'runs'}"])
    assert code == 0, err
    assert launched == [["-m", "spafit_exp", "-m", *args, f"run.root={tmp_path / 'runs'}", "launcher=slurm"]
                        for args in PRESET_SWEEPS["subset"]]
    assert (tmp_path / "subset-paper" / "report.md").is_file()  # the report on whatever records exist (none yet)


# ---------------------------------------------------------------- plans, rows and bad input

def test_grid_rates_surround_the_recommended_rate():
    assert grid_rates(6e-5, (2, 6), 3) == pytest.approx([2e-5, 6e-5, 2e-4])
    assert grid_rates(3e-4, (2, 6), 3) == pytest.approx([2e-4, 3e-4, 6e-4])  # off the grid: kept, grid around it
    assert grid_rates(6e-5, (1, 2, 5), 3) == pytest.approx([2e-5, 6e-5, 1e-4])  # not 5e-5: too close to 6e-5
    assert grid_rates(1e-2, (1, 2, 5), 2) == pytest.approx([5e-3, 1e-2])
    assert grid_rates(1e-3, (1, 3), 1) == pytest.approx([1e-3])


# The presets' own sweeps, written out here (not read from the papers' data): what `sweep plan` must agree with
PRESET_SWEEPS = {"spafit": [["experiment=spafit_table2"]], "stoc": [["experiment=stoc_table1"]],
                 "subset": [["experiment=subset_table1"],  # its selectors, then its baselines (the preset's header)
                            ["experiment=subset_table1", "method=full_ft,lora_r4", "selector=none"]]}


def _same_run_counts(name: str, overrides: list[str]) -> None:
    code, out, _ = _main([name, "--scale", "paper", "--plan", *overrides])
    assert code == 0
    ours = re.findall(r"^runs=(\d+)$", out, re.M)
    theirs = []
    for args in PRESET_SWEEPS[name]:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert sweep.main(["plan", "-m", *args, *overrides]) == 0
        theirs += re.findall(r"^runs=(\d+)$", printed.getvalue(), re.M)
    assert ours == theirs and int(ours[0]) > 0
    assert "needs:" in out


@pytest.mark.parametrize("name,task", [("spafit", "rte"), ("stoc", "rte"), ("subset", "trec6")])
def test_paper_plan_counts_the_runs_sweep_plan_counts(name, task):
    """Narrowed to one task (seconds); the whole presets: the slow test below."""
    _same_run_counts(name, [f"task={task}"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPERS))
def test_paper_plan_counts_the_runs_of_the_whole_preset(name):
    _same_run_counts(name, [])  # about half a minute each on 2 cores: Hydra composes every task x method


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_cpu_scale_rows_are_valid_runs(name, tmp_path):
    """Every row x task of the cpu scale composes and validates on the embedded model (nothing runs)."""
    paper = PAPERS[name]
    scale = paper.scales["cpu"]
    assert len(scale.tasks) >= 3 and scale.seeds >= 3 and scale.rates >= 3
    rates = runner.check(paper, scale, layout(paper, "cpu", tmp_path), [])
    assert all(len(rates[row.key]) == (3 if row.screen else 1) for row in scale.rows)
    assert not any(tmp_path.iterdir())  # checking writes nothing


@pytest.mark.parametrize("argv,names", [
    (["nope"], "paper 'nope'"), (["stoc", "--scale", "huge"], "--scale huge"),
    (["stoc", "--scale", "tiny", "trainer.nope=1"], "trainer.nope"), (["stoc", "--bogus"], "--bogus"),
])
def test_bad_input_is_one_line_and_writes_nothing(argv, names, tmp_path):
    code, out, err = _main([*argv, "--out", str(tmp_path / "out")])
    assert code == 2 and err.startswith("error: ") and names in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the tiny scale, end to end

def test_tiny_reproduction_of_each_paper_writes_every_section_and_resumes(tmp_path):
    for name in sorted(PAPERS):
        code, out, err = _main([name, "--scale", "tiny", "--out", str(tmp_path)])
        assert code == 0, err[-2000:]
        folder = tmp_path / f"{name}-tiny"
        text = (folder / "report.md").read_text()
        assert all(section in text for section in SECTIONS), name
        assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "![score vs trainable parameters](pareto.png)" in text
        claims_rows = [line for line in text.splitlines() if re.match(r"\| [A-Z]\d \|", line)]
        assert len(claims_rows) >= 4 and all(re.search(r"\*\*(holds|contradicted|inconclusive)\*\* \|$", line)
                                             for line in claims_rows)
        assert "†" in text and "±" in text  # two rates screened: the chosen one is at an edge; two seeds
        sessions = json.loads((folder / "sessions.json").read_text())
        assert sessions[-1]["ran"] > 0 and not sessions[-1]["failed"]
    code, _, _ = _main(["stoc", "--scale", "tiny", "--out", str(tmp_path)])  # again: everything is done
    sessions = json.loads((tmp_path / "stoc-tiny" / "sessions.json").read_text())
    assert code == 0 and len(sessions) == 2 and sessions[1]["ran"] == 0 and sessions[1]["skipped"] == 9
