"""Every command the tool prints (a sweep's edge lines, the flat-loss warning) repeats the user's run — the config
options chosen (`method=lora_i`, not its internal name `lora`), the model, every other override — with only the
learning rate changed; each is checked by expanding it as Hydra's sweeper would and composing every job. Ties and
failed rates: a grid whose rates all score the same has no edge; failed rates are no rates tried; one logged
loss is no trend."""

import json
import shlex
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from spafit_exp import CONF_DIR
from spafit_exp.core import fingerprint
from spafit_exp.core.record import Record
from spafit_exp.core.results import base_record
from spafit_exp.core.run_dir import RunDir
from spafit_exp.report.cells import EDGE, collect, fmt, select_lr
from spafit_exp.run.app import run
from spafit_exp.run.config import compose
from spafit_exp.run.console import summary
from spafit_exp.run.spec import resolve
from spafit_exp.sweep.lr_search import edge_commands, extend_grid
from tests.conftest import run_cli

TINY = ["model=tiny_bert", "trainer.max_train_samples=16", "trainer.max_eval_samples=16", "trainer.epochs=1",
        "trainer.batch_size=8", "trainer.max_len=32"]
LOGSPACED = [1e-5, 3.16e-5, 1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]  # conf/lr_grid/logspaced.yaml


def _jobs(printed: str) -> list[list[str]]:
    """The jobs `printed` (a `python -m spafit_exp -m ...` line) runs: its sweeps and the config's sweeper params
    (lr_grid, an experiment preset's grid), expanded by Hydra's BasicSweeper; the command line wins, as there."""
    argv = shlex.split(printed)
    assert argv[:4] == ["python", "-m", "spafit_exp", "-m"], printed
    args = argv[4:]
    parser = OverridesParser.create()
    first = [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override()
             else o.input_line for o in parser.parse_overrides(args)]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        params = hydra_compose("config", overrides=first, return_hydra_config=True).hydra.sweeper.params or {}
    batches = BasicSweeper.split_arguments(parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + args),
                                           None)
    return [list(job) for batch in batches for job in batch]


def _only_lr_differs(record: dict, job: list[str]) -> float:
    """The job's config is the record's run at another rate: same cell folder, same settings but trainer.lr
    (and the seed, where the job runs another of the cell's seeds). Returns the job's rate."""
    cfg = compose(job)
    assert Path(cfg.run.dir).parents[1] == Path(record["config"]["run"]["dir"]).parents[1], job
    diffs = fingerprint.differences(record["fingerprint"]["settings"], fingerprint.of(cfg)["settings"])
    assert [key for key, *_ in diffs if key != "trainer.seed"] in ([], ["trainer.lr"]), (job, diffs)
    return cfg.trainer.lr


def _write(overrides: list[str], score: float | None, status: str = "completed") -> dict:
    """The record a run of `overrides` would leave (the run's own config and fingerprint), with `score`."""
    cfg = compose(overrides)
    record = base_record(resolve(cfg)).to_json() | {"status": status}
    if status == "completed":
        record["metrics"] = {"best": {"epoch": 1, "dev": {cfg.task.main_metric: score}}}
    RunDir(Path(cfg.run.dir)).write(Record.from_json(record))
    return record


def _flat(record: dict) -> dict:
    return record | {"metrics": {"best": {"epoch": 1, "dev": {"accuracy": 0.5}}},
                     "train": {"losses": [(20, 0.6931), (40, 0.6932), (60, 0.6931)]},
                     "timing": {"train_samples_per_s": 80.0, "wall_s": 10.0}, "memory": {"peak_bytes": 2**30}}


def test_a_sweeps_printed_commands_rerun_its_cell(tmp_path):
    """A real `-m` sweep (method=lora_i: the record names it `lora`; model=tiny_bert, not the default): each job's
    record keeps its overrides; the edge line's command then runs the same cell at the next rate, and the flat-loss
    warning's command sweeps the rate of that same cell — no lora-II folder, no MiniLM."""
    root = tmp_path / "out"
    proc = run_cli(["-m", "method=lora_i", *TINY, "trainer.lr=1e-4,1e-3", f"run.root={root}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cell = root / "default" / "rte" / "lora-I-r64" / "tiny_bert"
    records = {lr: json.loads((cell / f"lr={lr}" / "seed=1" / "results.json").read_text()) for lr in ("0.0001", "0.001")}
    assert records["0.001"]["method"] == "lora" and "method=lora_i" in records["0.001"]["config"]["run"]["overrides"]
    for lr, score in (("0.0001", 0.4), ("0.001", 0.6)):  # best at the upper edge, whatever the tiny runs scored
        records[lr]["metrics"]["best"]["dev"]["accuracy"] = score
        RunDir(cell / f"lr={lr}" / "seed=1").write(Record.from_json(records[lr]))

    [line] = edge_commands(root / "default", ["-m", "method=lora_i", *TINY, "trainer.lr=1e-4,1e-3"])
    assert line.startswith("edge: rte / lora-I-r64 / tiny_bert: best lr 0.001 at the upper edge of 2 rates; extend: ")
    [job] = _jobs(line.split("; extend: ", 1)[1])
    assert _only_lr_differs(records["0.001"], job) == pytest.approx(1e-2)
    ran = run(compose(job))  # and run it: its record lands in the same cell, one rate further
    assert (cell / "lr=0.01" / "seed=1" / "results.json").is_file() and ran["status"] == "completed"
    assert [k for k, *_ in fingerprint.differences(records["0.001"]["fingerprint"]["settings"],
                                                    ran["fingerprint"]["settings"])] == ["trainer.lr"]

    warning = summary(_flat(records["0.001"]), cell / "lr=0.001" / "seed=1").splitlines()[-1]
    assert warning.startswith("warning: the training loss did not fall")
    jobs = _jobs(warning.split("sweep the rate: ", 1)[1])
    rates = sorted(_only_lr_differs(records["0.001"], job) for job in jobs)
    assert rates == LOGSPACED


@pytest.mark.parametrize("method", ["lora_r4", "spafit_8_12_ii", "lora_i"])
def test_edge_command_keeps_the_preset_the_model_and_every_override(tmp_path, method):
    """Presets whose record name differs from the option chosen; two seeds: the command runs both at the new rate."""
    base = [f"method={method}", *TINY, "task=mrpc", "trainer.weight_decay=0.0", f"run.root={tmp_path}"]
    records = {(lr, seed): _write([*base, f"trainer.lr={lr}", f"trainer.seed={seed}"], score)
               for lr, score in ((1e-4, 0.7), (1e-3, 0.6)) for seed in (1, 2)}  # best at the lower edge
    [line] = edge_commands(tmp_path / "default", [])
    assert "at the lower edge of 2 rates" in line and "trainer.seed=1,2" in line
    jobs = _jobs(line.split("; extend: ", 1)[1])
    assert sorted(compose(job).trainer.seed for job in jobs) == [1, 2]
    assert [_only_lr_differs(records[(1e-4, 1)], job) for job in jobs] == [1e-5, 1e-5]


def test_flat_loss_command_of_a_single_run_sweeps_only_its_rate(tmp_path):
    """A run without -m of an experiment preset (which sweeps tasks, selectors and seeds under -m): the warning's
    `-m` command sweeps this run's rate only, with its model and every other override."""
    overrides = ["experiment=subset_table1", "model=tiny_bert", "selector=bitfit", "trainer.max_len=32",
                 f"run.root={tmp_path}"]
    record = base_record(resolve(compose(overrides))).to_json()
    warning = summary(_flat(record), tmp_path).splitlines()[-1]
    assert "sweep the rate: python -m spafit_exp -m " in warning
    jobs = _jobs(warning.split("sweep the rate: ", 1)[1])
    assert len(jobs) == 7 and all(compose(job).trainer.seed == 1 for job in jobs)
    assert sorted(_only_lr_differs(record, job) for job in jobs) == LOGSPACED


def test_a_tie_is_no_edge(tmp_path):
    """Every rate at the same score (a grid that learnt nothing: the majority class): no †, no extension, `tie:`."""
    base = ["method=lora_i", *TINY, f"run.root={tmp_path}"]
    for lr in (1e-5, 1e-4, 1e-3):
        _write([*base, f"trainer.lr={lr}"], 0.5271)
    cell = select_lr(collect(tmp_path)).iloc[0]
    assert not cell["edge"] and EDGE not in fmt(cell, "accuracy") and cell["tie"]
    assert edge_commands(tmp_path / "default", []) == [
        "tie: rte / lora-I-r64 / tiny_bert: all 3 rates score accuracy=0.5271: no rate is better, nothing to extend"]
    calls = []
    outcome = extend_grid([1e-5, 1e-4, 1e-3], lambda lr: calls.append(lr) or 0.5271, max_extensions=4)
    assert outcome["tie"] and outcome["extensions"] == 0 and len(calls) == 3


def test_failed_rates_are_not_rates_tried(tmp_path):
    """A failed (or unfinished) rate is no rate tried, as `make tables` counts them: the best completed rate is at
    the upper edge of the two completed, and the next rate is one step past it, not back inside the grid."""
    base = ["method=lora_i", *TINY, f"run.root={tmp_path}"]
    for lr, score in ((1e-3, 0.5), (2e-3, 0.6)):
        record = _write([*base, f"trainer.lr={lr}"], score)
    _write([*base, "trainer.lr=5e-3"], None, status="failed")
    [line] = edge_commands(tmp_path / "default", [])
    assert "best lr 0.002 at the upper edge of 2 rates (1 failed rate not counted: 0.005); extend: " in line
    [job] = _jobs(line.split("; extend: ", 1)[1])
    assert _only_lr_differs(record, job) == pytest.approx(4e-3)


def test_one_logged_loss_is_no_trend(tmp_path):
    record = _flat(base_record(resolve(compose(["model=tiny_bert", f"run.root={tmp_path}"]))).to_json())
    text = summary(record | {"train": {"losses": [(4, 0.6931)]}}, tmp_path)
    assert "train loss 0.6931 (one value logged)" in text and "->" not in text
    assert "warning: one training loss was logged (step 4, trainer.log_every=20): the loss trend is unknown" in text
