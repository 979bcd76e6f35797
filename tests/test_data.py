"""Readers against the vendored files (row counts from data/MANIFEST), quirks, bad data, collator, cache."""

import json
from pathlib import Path

import pytest

from spafit_exp import DATA_DIR
from spafit_exp.core.errors import ConfigError
from spafit_exp.inputs.data import PadCollator, load_split, tokenize
from spafit_exp.inputs.readers import read_glue_tsv, read_split
from spafit_exp.run.spec import resolve
from tests.conftest import compose
from tests.helpers import data_and_task

MANIFEST = json.loads((DATA_DIR / "manifest.json").read_text())
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qnli", "rte", "wnli")
SPLIT_FILES = [e for e in MANIFEST
               if e["path"].startswith("data/glue/") and e["path"].split("/")[2] in GLUE_TASKS
               and e["path"].endswith(("train.tsv", "dev.tsv", "test.tsv"))]


def test_manifest_files_are_vendored():
    for entry in MANIFEST:
        assert (DATA_DIR.parent / entry["path"]).is_file(), entry["path"]


@pytest.mark.parametrize("entry", SPLIT_FILES, ids=[e["path"] for e in SPLIT_FILES])
def test_row_counts_match_manifest(entry):
    _, _, task, filename = entry["path"].split("/")
    cfg = compose([f"task={task}"])
    split = filename.removesuffix(".tsv")
    raw = read_split(*data_and_task(cfg), split)
    assert len(raw.labels) == entry["rows"]
    assert all(len(field) == entry["rows"] for field in raw.texts)
    if split != "test":
        assert None not in raw.labels


OTHER_FILES = {"data/trec/train_5500.label": ("trec6", "train"), "data/trec/TREC_10.label": ("trec6", "test"),
               "data/conll2003/eng.train": ("conll2003", "train"), "data/conll2003/eng.testa": ("conll2003", "dev"),
               "data/conll2003/eng.testb": ("conll2003", "test")}


@pytest.mark.parametrize("path,task_split", OTHER_FILES.items(), ids=list(OTHER_FILES))
def test_trec_conll_counts_match_manifest(path, task_split):
    rows = next(e["rows"] for e in MANIFEST if e["path"] == path)
    task, split = task_split
    raw = read_split(*data_and_task(compose([f"task={task}"])), split)
    assert len(raw.labels) == rows
    if task == "conll2003":
        assert all(len(words) == len(tags) for words, tags in zip(raw.texts[0], raw.labels))


def test_token_labels_on_first_subtoken_only():
    from spafit_exp.inputs.modeling import build_tokenizer

    cfg = compose(["task=conll2003"])
    raw = read_split(*data_and_task(cfg), "dev", limit=20)
    spec = resolve(cfg)
    ds = tokenize(raw, spec.task, build_tokenizer(spec.model), 128)
    for row, tags in zip(ds, raw.labels):
        labelled = [x for x in row["labels"] if x != -100]
        assert labelled == tags  # one label per word, in order; sub-tokens and specials ignored


def test_quirks():
    cola = read_split(*data_and_task(compose(["task=cola"])), "dev")  # no header line: the first row is data
    assert cola.labels[:3] == [1, 1, 1] and cola.texts[0][0].startswith("The sailors rode the breeze")
    mrpc = read_split(*data_and_task(compose(["task=mrpc"])), "train")  # BOM before "Quality" must not break the header
    assert set(mrpc.labels) == {0, 1}
    rte = read_split(*data_and_task(compose(["task=rte"])), "dev")  # string labels mapped in the hub's ClassLabel order
    assert set(rte.labels) == {0, 1}
    stsb = read_split(*data_and_task(compose(["task=stsb"])), "dev")
    assert all(0.0 <= x <= 5.0 for x in stsb.labels) and isinstance(stsb.labels[0], float)


def _bad_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rte" / "train.tsv"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


BAD_DATA = [
    ("", "empty file"),
    ("index\tsentence1\tsentence2\tlabel\n", "no data rows"),
    ("index\tsentence1\tlabel\n0\ta\tentailment\n", "columns ['sentence2'] not in header"),
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\n", "train.tsv:3: expected 4 tab-separated"),
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", "train.tsv:2: label 'maybe' not in"),
    # a tab inside a text shifts the columns; the label column would be read from the wrong field
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tx\tentailment\n", "train.tsv:2: expected 4 tab-separated fields"),
]


@pytest.mark.parametrize("text,needle", BAD_DATA, ids=[n for _, n in BAD_DATA])
def test_bad_data_names_file_and_line(tmp_path, text, needle):
    path = _bad_file(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        read_glue_tsv(path, resolve(compose(["task=rte"])).task)
    assert needle in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_label_out_of_range(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood\t7\n")
    with pytest.raises(ConfigError, match=r"train.tsv:2: label 7 outside 0..1"):
        read_glue_tsv(path, resolve(compose(["task=sst2"])).task)


def test_collator_pads_dynamically():
    rows = [{"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": 1},
            {"input_ids": [1, 2], "attention_mask": [1, 1], "labels": 0}]
    batch = PadCollator(pad_id=9)(rows)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [1, 2, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    tokens = PadCollator(pad_id=0)([{"input_ids": [1, 2], "labels": [-100, 3]}, {"input_ids": [1], "labels": [5]}])
    assert tokens["labels"].tolist() == [[-100, 3], [5, -100]]


def test_tokenized_cache_is_reused(tmp_path):
    from spafit_exp.inputs.modeling import build_tokenizer

    cfg = resolve(compose(["task=rte", "trainer.max_train_samples=16", f"data.cache_dir={tmp_path}", "trainer.max_len=32"]))
    tok = build_tokenizer(cfg.model)
    first = load_split(cfg, "train", tok, 16)
    entries = list((tmp_path / "tokenized").iterdir())
    second = load_split(cfg, "train", tok, 16)
    assert len(entries) == 1 and first.to_list() == second.to_list()
    assert max(len(r["input_ids"]) for r in first) <= 32


def test_trec_selects_on_a_seeded_holdout_of_train_and_reports_test():
    """TREC-6 has no dev set: a fixed 10% of the training file is dev (the same rows whatever the training slice
    or run seed), disjoint from the training rows; the 500-question test set is the reported split."""
    from spafit_exp.inputs.data import holdout_indices, load_task_data
    from spafit_exp.inputs.modeling import build_tokenizer

    dev, train = holdout_indices(5452, 0.1, 0)
    assert len(dev) == 545 and not set(dev) & set(train) and len(dev) + len(train) == 5452
    assert holdout_indices(5452, 0.1, 0) == (dev, train)
    tokenizer = build_tokenizer(resolve(compose([])).model)
    small = load_task_data(resolve(compose(["task=trec6", "trainer.max_train_samples=100"])), tokenizer)
    other = load_task_data(resolve(compose(["task=trec6", "trainer.max_train_samples=50", "trainer.seed=7"])), tokenizer)
    assert len(small.evals["dev"]) == 545 and small.evals["dev"] == other.evals["dev"]
    assert len(small.tests["test"]) == 500 and len(small.train) == 100
    dev_text = {tuple(r["input_ids"]) for r in small.evals["dev"]}
    assert not dev_text & {tuple(r["input_ids"]) for r in small.train[:100]} or len(dev_text) < 545


def test_conll_reports_its_labelled_test_split():
    from spafit_exp.inputs.data import load_task_data
    from spafit_exp.inputs.modeling import build_tokenizer

    cfg = resolve(compose(["task=conll2003", "trainer.max_train_samples=8", "trainer.max_eval_samples=8"]))
    data = load_task_data(cfg, build_tokenizer(cfg.model))
    assert set(data.evals) == {"dev"} and set(data.tests) == {"test"}
    assert any(x != -100 for row in data.tests["test"] for x in row["labels"])
