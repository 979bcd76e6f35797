"""The Method protocol (spafit_exp/methods/protocol.py): every registered method returns a `Method` whose typed
`ParamCounts` agree with what trains and give exactly the record's `params` the run wrote before; nothing in the
package names the callback bag it replaced; the dry run's summary (and the run header) print the typed counts."""

import re
from pathlib import Path

import pytest

from spafit_exp.methods import Method, ParamCounts, available
from spafit_exp.ops.params import count_params
from spafit_exp.run.app import dry_run, prepare
from spafit_exp.run.config import compose
from spafit_exp.run.console import header
from spafit_exp.run.spec import resolve

PACKAGE = Path(__file__).resolve().parent.parent / "spafit_exp"


def meta_spec(name: str):
    """The method's own YAML, as a dry run resolves it (a fixed subset's selection: sizes only)."""
    model = "minilm" if name == "spafit" else "tiny_bert"  # SPAFIT's default groups need more than two layers
    selector = ["selector=random"] if name == "subset" else []  # a fixed subset needs a selector
    return resolve(compose([f"model={model}", f"method={name}", "trainer.dry_run=true", *selector]))


@pytest.mark.parametrize("name", available())
def test_every_method_is_a_method_whose_counts_agree_with_what_trains(name):
    method = prepare(meta_spec(name), device="meta")
    assert isinstance(method, Method)
    counts = method.counts()
    assert isinstance(counts, ParamCounts)
    trainable, total = count_params(method.model)
    info = method.info
    assert counts.total == total
    if "k" in info:  # element-level subsets: k of n candidate elements (+ the head)
        assert (counts.selected, counts.candidates) == (info["k"], info["n"])
        assert counts.selected < counts.candidates and counts.trainable == info["trainable"]
        assert counts.dense_trainable == info.get("dense_trainable")  # per-step selection: n candidates + head
        if counts.dense_trainable is not None:
            assert counts.dense_trainable == trainable and counts.trainable < trainable
    elif "trainable" in info:  # dps_mix: a step updates part of each masked weight, any element may train
        assert (counts.trainable, counts.dense_trainable) == (info["trainable"], info["dense_trainable"])
        assert counts.selected is None and counts.trainable < counts.dense_trainable == trainable
    else:  # tensor-level: what requires grad
        assert counts == ParamCounts(trainable, total)
    # results.json's `params` as the run wrote it before the typed counts: the info keys were its source
    legacy = info.get("trainable", trainable)
    dense = {"dense_trainable": info["dense_trainable"]} if "dense_trainable" in info else {}
    assert counts.record() == {"trainable": legacy, "total": total, "fraction": legacy / total, **dense}
    assert list(counts.record()) == ["trainable", "total", "fraction", *dense]


def test_no_module_names_the_replaced_callback_bag():
    found = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py")) if re.search(r"\bPrepared\b", p.read_text())]
    assert found == []


@pytest.mark.parametrize("name", available())
def test_dry_run_summary_is_the_typed_counts(name, capsys):
    spec = meta_spec(name)
    dry_run(spec)
    lines = capsys.readouterr().out.strip().splitlines()
    counts = prepare(spec, device="meta").counts()
    notes = lines[lines.index("(cells: trainable parameters per kind)") + 1:]
    expected = ([f"selected elements: {counts.selected} of {counts.candidates} candidates"]
                if counts.selected is not None else [])
    if counts.dense_trainable is not None:
        expected.append(f"dense_trainable={counts.dense_trainable} (trainable_params: elements one step updates)")
    assert notes == [*expected, f"trainable_params={counts.trainable} total_params={counts.total}"]


@pytest.mark.parametrize("counts, says", [
    (ParamCounts(1_234, 10_000, dense_trainable=5_000, selected=1_000, candidates=4_000),
     "1,234 of 10,000 parameters (12.340%); 1,000 of 4,000 candidate elements per step"),
    (ParamCounts(1_234, 10_000, selected=1_000, candidates=4_000),
     "1,234 of 10,000 parameters (12.340%); 1,000 of 4,000 candidate elements"),
    (ParamCounts(6_000, 10_000, dense_trainable=10_000), "6,000 of 10,000 parameters (60.000%)"),
    (ParamCounts(10_000, 10_000), "10,000 of 10,000 parameters (100.000%)"),
])
def test_run_header_reads_the_typed_counts(counts, says, tmp_path):
    spec = meta_spec("full_ft")
    text = header(spec, counts, 32, {"dev": 16}, "cpu", 1, tmp_path)
    method_line = next(line for line in text.splitlines() if line.strip().startswith("method"))
    assert method_line.endswith(f"{spec.method.tag}: {says}")
