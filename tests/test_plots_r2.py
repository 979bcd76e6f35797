"""Figures good enough for a paper, checked on the matplotlib objects (no golden images): error bars of std over
seeds on every point, display names and metric labels, no Pareto legend entry without a line, no figure with one
point, readable tick labels on a narrow memory axis, and learning curves per epoch."""

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from spafit_exp.report import plots, tables

# Two methods x three seeds at one LR on MRPC (main metric F1), three epochs each; full_ft also at a second LR.
DEV = {"full_ft": [[0.70, 0.80, 0.84], [0.72, 0.81, 0.86], [0.68, 0.79, 0.85]],
       "full_bitfit": [[0.60, 0.70, 0.74], [0.64, 0.72, 0.78], [0.62, 0.71, 0.76]]}
LOSS = {"full_ft": [0.65, 0.50, 0.40], "full_bitfit": [0.69, 0.62, 0.58]}
PARAMS = {"full_ft": 22_700_000, "full_bitfit": 26_500}
PEAK_GIB = {"full_ft": 1.31, "full_bitfit": 1.25}  # less than a decade apart, as on CPU runs


def _record(root: Path, tag: str, seed: int, lr: float = 6e-5, dev: list[float] | None = None,
            experiment: str = "demo", peak: float | None = None, trainable: int | None = None) -> None:
    dev = dev or DEV[tag][seed - 1]
    steps = [10 * (i + 1) for i in range(len(dev))]
    # two logged windows per epoch around the epoch's loss: the epoch mean is LOSS (+ a per-seed offset)
    losses = [[step - 5 * k, LOSS[tag][i] + 0.01 * seed + (0.02 if k else -0.02)]
              for i, step in enumerate(steps) for k in (1, 0)]
    best = int(np.argmax(dev))
    record = {"schema": 1, "status": "completed", "experiment": experiment, "task": "mrpc", "method": tag,
              "method_tag": tag, "selector": "none", "model": "minilm", "lr": lr, "seed": seed, "main_metric": "f1",
              "params": {"trainable": trainable or PARAMS[tag], "total": 22_700_000},
              "memory": {"peak_bytes": int((peak or PEAK_GIB[tag]) * 2**30)},
              "metrics": {"epochs": [{"epoch": i + 1, "step": s, "dev": {"f1": d, "accuracy": d - 0.05},
                                      "train_loss": losses[2 * i + 1][1]} for i, (s, d) in enumerate(zip(steps, dev))],
                          "best": {"epoch": best + 1, "dev": {"f1": dev[best], "accuracy": dev[best] - 0.05}}},
              "train": {"losses": losses}, "config": {}, "provenance": {"git_sha": "abc"}}
    path = root / experiment / "mrpc" / tag / "minilm" / f"lr={lr}" / f"seed={seed}" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


def _sweep(root: Path) -> None:
    for tag in DEV:
        for seed in (1, 2, 3):
            _record(root, tag, seed)
    for seed in (1, 2, 3):  # a worse second rate: LR curves need two
        _record(root, "full_ft", seed, lr=2e-5, dev=[d - 0.1 for d in DEV["full_ft"][seed - 1]])


@pytest.fixture
def figures(monkeypatch):
    """Every figure `make tables` draws, by file stem, instead of being saved and closed."""
    drawn = {}

    def keep(fig, path):
        fig.canvas.draw()  # lays the ticks out as saving would
        drawn[path.name] = fig
        return [path.with_suffix(".png")]

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def _draw(root: Path, out: Path) -> None:
    assert tables.main(["--root", str(root), "--out", str(out / "t"), "--plots", str(out / "p")]) == 0


def _bars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _half_lengths(bar: ErrorbarContainer) -> list[float]:
    """Per point: half the length of its vertical error bar (the plotted std)."""
    segments = bar.lines[2][0].get_segments()
    return [abs(seg[1][1] - seg[0][1]) / 2 for seg in segments]


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_pareto_points_carry_std_error_bars_and_readable_labels(tmp_path, figures):
    _sweep(tmp_path / "runs")
    _draw(tmp_path / "runs", tmp_path)
    ax = figures["pareto_mrpc"].axes[0]
    bars = _bars(ax)
    assert len(bars) == 2  # one per method, each with its error bar
    best_f1 = {tag: [max(seed) for seed in runs] for tag, runs in DEV.items()}
    stds = sorted(100 * np.std(v, ddof=1) for v in best_f1.values())
    assert sorted(h for bar in bars for h in _half_lengths(bar)) == pytest.approx(stds)
    assert ax.get_ylabel() == "MRPC dev F1 (%)" and ax.get_xlabel() == "trainable parameters"
    assert _legend(ax) == ["Full FT", "BitFit", "Pareto front"]  # methods in the tables' row order, then the front
    assert not any(tag in ax.get_title() for tag in ("demo", "mrpc"))  # the task's display name, no raw names


def test_lr_curves_carry_std_error_bars_and_readable_labels(tmp_path, figures):
    _sweep(tmp_path / "runs")
    _draw(tmp_path / "runs", tmp_path)
    ax = figures["lr_curves_mrpc"].axes[0]
    bars = {label: bar for label, bar in zip(_legend(ax), _bars(ax))}
    assert set(bars) == {"Full FT", "BitFit"}
    full = [max(seed) for seed in DEV["full_ft"]]
    assert _half_lengths(bars["Full FT"]) == pytest.approx([100 * np.std(full, ddof=1)] * 2)  # both rates
    assert ax.get_ylabel() == "MRPC dev F1 (%)" and "dev.f1" not in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels == ["2e-05", "6e-05"]  # the rates run, not overlapping minor-tick labels


def test_learning_curves_show_loss_and_dev_score_per_epoch_with_std(tmp_path, figures):
    _sweep(tmp_path / "runs")
    _draw(tmp_path / "runs", tmp_path)
    loss_ax, dev_ax = figures["learning_curves_mrpc"].axes
    assert (loss_ax.get_xlabel(), loss_ax.get_ylabel()) == ("epoch", "training loss")
    assert (dev_ax.get_xlabel(), dev_ax.get_ylabel()) == ("epoch", "MRPC dev F1 (%)")
    assert _legend(dev_ax) == ["Full FT", "BitFit"]  # the cells' order: full FT first
    for tag, loss_bar, dev_bar in zip(["full_ft", "full_bitfit"], _bars(loss_ax), _bars(dev_ax)):
        epochs, loss = loss_bar.lines[0].get_data()
        assert list(epochs) == [1, 2, 3]
        assert list(loss) == pytest.approx([value + 0.02 for value in LOSS[tag]])  # seeds' offsets 0.01..0.03
        assert _half_lengths(loss_bar) == pytest.approx([0.01] * 3)
        dev = np.array(DEV[tag]) * 100  # at the chosen LR (6e-05) only: seeds x epochs
        assert list(dev_bar.lines[0].get_ydata()) == pytest.approx(list(dev.mean(axis=0)))
        assert _half_lengths(dev_bar) == pytest.approx(list(dev.std(axis=0, ddof=1)))
    assert (tmp_path / "p" / "demo" / "learning_curves_mrpc.png").name  # the stem make tables writes


def test_no_pareto_front_entry_without_a_line(tmp_path, figures):
    """BitFit is cheaper and better here: the front is one point, so no dashed line and no legend entry."""
    root = tmp_path / "runs"
    for seed in (1, 2, 3):
        _record(root, "full_ft", seed)
        _record(root, "full_bitfit", seed, dev=[d + 0.2 for d in DEV["full_bitfit"][seed - 1]])
    _draw(root, tmp_path)
    ax = figures["pareto_mrpc"].axes[0]
    assert "Pareto front" not in _legend(ax) and len(_bars(ax)) == 2


def test_no_figure_for_a_single_point(tmp_path, figures):
    """One method at one LR with one epoch: nothing to compare or connect, so no Pareto, LR or learning curve."""
    root = tmp_path / "runs"
    for seed in (1, 2, 3):
        _record(root, "full_ft", seed, dev=[0.8 + 0.01 * seed])
    _draw(root, tmp_path)
    assert figures == {} and not (tmp_path / "p" / "demo").exists()


def _overlaps(ax) -> list[tuple[str, str]]:
    renderer = ax.figure.canvas.get_renderer()
    ticks = ax.xaxis.get_major_ticks() + ax.xaxis.get_minor_ticks()
    shown = [(t.label1.get_text(), t.label1.get_window_extent(renderer)) for t in ticks
             if t.label1.get_visible() and t.label1.get_text() and ax.get_xlim()[0] <= t.get_loc() <= ax.get_xlim()[1]]
    return [(a, b) for i, (a, box_a) in enumerate(shown) for b, box_b in shown[i + 1:] if box_a.overlaps(box_b)]


@pytest.mark.parametrize("peaks", [(1.25, 1.31), (1.2, 1.9), (0.8, 1.3), (2.1, 37.0)])
def test_memory_axis_tick_labels_never_overlap(tmp_path, figures, peaks):
    root = tmp_path / "runs"
    for tag, peak in zip(DEV, peaks):
        for seed in (1, 2, 3):
            _record(root, tag, seed, peak=peak)
    _draw(root, tmp_path)
    ax = figures["pareto_memory_mrpc"].axes[0]
    assert _overlaps(ax) == [] and ax.get_xlabel() == "peak memory (GiB)"
    assert len([t for t in ax.get_xticklabels() if t.get_text()]) >= 2  # still a readable scale


@pytest.mark.parametrize("rates", [(2e-5, 6e-5), (1e-5, 2e-5, 6e-5, 1e-4),
                                   (1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 3e-4, 1e-3, 1e-2)])
def test_lr_axis_tick_labels_never_overlap(tmp_path, figures, rates):
    root = tmp_path / "runs"
    for i, lr in enumerate(rates):
        for seed in (1, 2):
            _record(root, "full_ft", seed, lr=lr, dev=[0.7 + 0.01 * i + 0.01 * seed])
    _draw(root, tmp_path)
    ax = figures["lr_curves_mrpc"].axes[0]
    assert _overlaps(ax) == [] and len([t for t in ax.get_xticklabels() if t.get_text()]) >= 2


def test_malformed_epoch_fields_read_as_missing_not_as_errors(tmp_path, figures):
    """`metrics.epochs` and `train.losses` are outside the checked record shape: junk there costs the learning
    curve its points, never the table."""
    from spafit_exp.core.record import Record
    from spafit_exp.report.cells import curve

    assert curve(Record.from_json({"metrics": {"epochs": "junk"}, "train": {"losses": {"a": 1}}})) == []
    points = curve(Record.from_json({"main_metric": "f1", "train": {"losses": [[5, 0.5], "x", [10, None], [True, 0.1]]},
                                     "metrics": {"epochs": [{"epoch": 1, "step": 10, "dev": {"f1": 0.8}}, {"epoch": "2"},
                                                            7]}}))
    assert points == [(1.0, 0.8, 0.5)]
    _sweep(tmp_path / "runs")
    path = next((tmp_path / "runs").rglob("results.json"))
    record = json.loads(path.read_text())
    record["metrics"]["epochs"] = [{"epoch": 1, "dev": "junk", "step": "x"}]
    record["train"]["losses"] = "junk"
    path.write_text(json.dumps(record))
    _draw(tmp_path / "runs", tmp_path)
    assert "learning_curves_mrpc" in figures and (tmp_path / "t" / "demo.md").is_file()
