"""Data integrity: the cache keyed by content, vendored files checked against data/manifest.json, damaged rows named
by file and line, over-long texts clipped before tokenizing, damaged tokenized caches rebuilt (issue 29)."""

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from spafit_exp import DATA_DIR
from spafit_exp.core.errors import ConfigError
from spafit_exp.inputs import readers
from spafit_exp.inputs.data import CHARS_PER_TOKEN, ROWS_FILE, load_split, run_key, tokenize
from spafit_exp.inputs.modeling import build_tokenizer
from spafit_exp.inputs.readers import check_data_files, checked_digest, read_split
from spafit_exp.run.spec import resolve
from tests.conftest import TINY_RUN, compose, run_cli
from tests.helpers import data_and_task

MANIFEST = json.loads((DATA_DIR / "manifest.json").read_text())
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
STSB_ROW = "{i}\tmain-news\tf\t2012\t{i}\tnone\tnone\tA man is playing.\tA man plays.\t{score}"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(resolve(compose(["model=tiny_bert"])).model)


def _cola_copy(tmp_path: Path, rows: int = 40) -> Path:
    """A user's data.dir holding the first `rows` lines of the vendored CoLA train and dev files."""
    folder = tmp_path / "glue" / "cola"
    folder.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        lines = (DATA_DIR / "glue" / "cola" / name).read_text().splitlines(keepends=True)[:rows]
        (folder / name).write_text("".join(lines))
    return tmp_path / "glue"


def _flip_labels_keep_size_and_mtime(path: Path) -> None:
    stat = path.stat()
    rows = [line.split("\t") for line in path.read_text().splitlines(keepends=True)]
    path.write_text("".join("\t".join([r[0], "0" if r[1] == "1" else "1", *r[2:]]) for r in rows))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


# ---------------------------------------------------------------- item 5: content-keyed caches, the manifest


def test_labels_edited_in_place_with_size_and_mtime_kept_are_not_served_from_the_cache(tmp_path, tok):
    cfg = resolve(compose(["task=cola", f"data.dir={_cola_copy(tmp_path)}", f"data.cache_dir={tmp_path / 'cache'}",
                           "trainer.max_len=32"]))
    before = load_split(cfg, "train", tok)["labels"]
    decoder_key = run_key(cfg, "decoder")
    _flip_labels_keep_size_and_mtime(tmp_path / "glue" / "cola" / "train.tsv")
    readers._DIGESTS.clear()  # as in the next run, a new process
    after = load_split(cfg, "train", tok)["labels"]
    assert after == [1 - label for label in before]
    assert run_key(cfg, "decoder") != decoder_key  # pre-tuned decoders and statistics too


def test_vendored_files_match_the_manifest():
    for entry in MANIFEST:
        assert checked_digest(DATA_DIR.parent / entry["path"]) == entry["sha256"], entry["path"]


@pytest.fixture
def fake_vendored(tmp_path, monkeypatch):
    """A vendored data dir of one CoLA task whose manifest records the vendored files' true hashes."""
    data = tmp_path / "repo" / "data"
    shutil.copytree(DATA_DIR / "glue" / "cola", data / "glue" / "cola")
    entries = [e for e in MANIFEST if e["path"].startswith("data/glue/cola/")]
    (data / "manifest.json").write_text(json.dumps(entries))
    monkeypatch.setattr(readers, "DATA_DIR", data)
    readers._manifest.cache_clear()
    yield data / "glue" / "cola"
    readers._manifest.cache_clear()


@pytest.mark.parametrize("damage", ["truncated", "edited"])
def test_damaged_vendored_file_is_one_line_naming_it(fake_vendored, tmp_path, damage):
    cfg = resolve(compose(["task=cola"]))
    check_data_files(cfg.data, cfg.task)  # intact: passes
    path = fake_vendored / "train.tsv"
    text = path.read_text()
    path.write_text(text[: len(text) // 2] if damage == "truncated" else text.replace("\t1\t", "\t0\t", 3))
    readers._DIGESTS.clear()  # as in the next run, a new process
    with pytest.raises(ConfigError) as err:
        check_data_files(cfg.data, cfg.task)
    message = str(err.value)
    assert message.startswith(f"{path}: vendored data file differs from data/manifest.json") and "\n" not in message
    assert "8551 rows" in message and "git checkout -- data/glue/cola/train.tsv" in message
    with pytest.raises(ConfigError, match="differs from data/manifest.json"):
        read_split(cfg.data, cfg.task, "train")
    user_copy = tmp_path / "mine" / "cola"  # the same damaged bytes in a user's own data.dir are not checked
    shutil.copytree(fake_vendored, user_copy)
    check_data_files(*data_and_task(compose(["task=cola", f"data.dir={user_copy.parent}"])))


def test_file_hashed_once_per_version(tmp_path, monkeypatch):
    path = tmp_path / "f.tsv"
    path.write_text("a\n")
    calls = []
    real = hashlib.file_digest
    monkeypatch.setattr(readers.hashlib, "file_digest", lambda *a: calls.append(1) or real(*a))
    first = readers.file_digest(path)
    assert readers.file_digest(path) == first and len(calls) == 1
    path.write_text("b\n")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))  # a later version (the clock may not have ticked yet)
    assert readers.file_digest(path) != first and len(calls) == 2


# ---------------------------------------------------------------- item 6: damaged rows


def _stsb_dir(tmp_path: Path, train_rows: list[str]) -> Path:
    folder = tmp_path / "glue" / "stsb"
    folder.mkdir(parents=True)
    dev = [STSB_ROW.format(i=i, score="3.800") for i in range(4)]
    (folder / "dev.tsv").write_text(STSB_HEADER + "\n".join(dev) + "\n")
    (folder / "train.tsv").write_text(STSB_HEADER + "\n".join(train_rows) + "\n")
    return folder


@pytest.mark.parametrize("score,needle", [("4.", "train.tsv:4: label '4.' is not a number"),
                                          ("nan", "train.tsv:4: label 'nan' is not a number"),
                                          (" 4", "train.tsv:4: label ' 4' is not a number")])
def test_stsb_label_cut_short_is_refused(tmp_path, score, needle):
    rows = [STSB_ROW.format(i=i, score="4.000") for i in range(5)]
    rows[2] = STSB_ROW.format(i=2, score=score)
    folder = _stsb_dir(tmp_path, rows)
    with pytest.raises(ConfigError, match=needle):
        read_split(*data_and_task(compose(["task=stsb", f"data.dir={folder.parent}"])), "train")


def test_integer_label_must_be_digits(tmp_path):
    path = tmp_path / "sst2" / "train.tsv"
    path.parent.mkdir()
    path.write_text("sentence\tlabel\ngood\t1\nbad\t+0\n")
    with pytest.raises(ConfigError, match=r"train.tsv:3: label '\+0' is not an integer"):
        read_split(*data_and_task(compose(["task=sst2", f"data.dir={tmp_path}"])), "train")


def test_row_cut_short_is_refused_and_a_last_row_without_line_break_warns(tmp_path, capsys):
    """CoLA's sentence is its last field: a file cut inside it still parses; only the missing line break shows."""
    root = _cola_copy(tmp_path, rows=12)
    path = root / "cola" / "train.tsv"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + "\t".join(lines[-1].split("\t")[:2]))  # cut before the sentence column
    cfg = resolve(compose(["task=cola", f"data.dir={root}"]))
    with pytest.raises(ConfigError, match=r"train.tsv:12: expected 4 tab-separated fields \(task.columns\), got"):
        read_split(cfg.data, cfg.task, "train")
    path.write_text(text[:-8])  # cut inside the last sentence
    assert len(read_split(cfg.data, cfg.task, "train").labels) == 12
    assert f"warning: {path}:12: the last row has no line break" in capsys.readouterr().err
    path.write_text(text)
    read_split(cfg.data, cfg.task, "train")
    assert "warning" not in capsys.readouterr().err


def test_vendored_file_without_final_line_break_does_not_warn(capsys):
    assert len(read_split(*data_and_task(compose(["task=cola"])), "dev").labels) == 1043  # the original ends without one
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("task,name,header", [("rte", "rte/train.tsv", "index\tsentence1\tsentence2\tlabel\n"),
                                              ("conll2003", "conll2003/eng.train", "")])
def test_non_utf8_bytes_name_file_and_line(tmp_path, task, name, header):
    path = tmp_path / name
    path.parent.mkdir()
    rows = (b"0\ta\tb\tentailment\n1\tca\xffe\tb\tentailment\n" if task == "rte"
            else b"EU NNP B-NP B-ORG\n\nca\xffe NN B-NP O\n")
    path.write_bytes(header.encode() + rows)
    line, column = (3, 5) if task == "rte" else (3, 3)
    with pytest.raises(ConfigError) as err:
        read_split(*data_and_task(compose([f"task={task}", f"data.dir={tmp_path}"])), "train")
    assert str(err.value) == f"{path}:{line}: byte 0xff (column {column}) is not UTF-8; save the file as UTF-8"


def test_bad_row_on_the_command_line_is_one_line_exit_2_nothing_written(tmp_path):
    rows = [STSB_ROW.format(i=i, score="4.000") for i in range(12)]
    rows[5] = STSB_ROW.format(i=5, score="4.")
    folder = _stsb_dir(tmp_path, rows)
    proc = run_cli([*TINY_RUN, "task=stsb", f"data.dir={folder.parent}", f"run.root={tmp_path}/out",
                    f"data.cache_dir={tmp_path}/cache"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {folder / 'train.tsv'}:7: label '4.' is not a number"], proc.stderr
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


# ---------------------------------------------------------------- item 6: over-long texts


class _Spy:
    """A tokenizer that records the longest text it was given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.longest = tokenizer, 0

    def __call__(self, *fields, **kwargs):
        texts = [t for field in fields for item in field for t in (item if isinstance(item, list) else [item])]
        self.longest = max(self.longest, *map(len, texts))
        return self.tokenizer(*fields, **kwargs)


def test_huge_line_is_clipped_before_tokenizing_with_the_same_result(tmp_path, tok):
    line = "the quick brown fox jumps over the lazy dog " * 50_000  # 2.2 MB in one row
    path = tmp_path / "rte" / "train.tsv"
    path.parent.mkdir()
    path.write_text(f"index\tsentence1\tsentence2\tlabel\n0\t{line}\tshort\tentailment\n1\tok\tfine\tentailment\n")
    cfg = resolve(compose(["task=rte", f"data.dir={tmp_path}"]))
    spy = _Spy(tok)
    ds = tokenize(read_split(cfg.data, cfg.task, "train"), cfg.task, spy, 64)
    assert spy.longest <= 64 * CHARS_PER_TOKEN
    assert ds["input_ids"][0] == tok(line[:100_000], "short", truncation=True, max_length=64)["input_ids"]


@pytest.mark.parametrize("max_len", [8, 128])
def test_clipping_leaves_normal_rows_unchanged(tok, max_len):
    """RTE's long premises (max_len=8 clips them to 256 characters) and CoNLL's sentences tokenize as unclipped."""
    cfg = resolve(compose(["task=rte"]))
    raw = read_split(cfg.data, cfg.task, "dev")
    assert max(len(t) for t in raw.texts[0]) > 8 * CHARS_PER_TOKEN
    assert tokenize(raw, cfg.task, tok, max_len)["input_ids"] == tok(*raw.texts, truncation=True,
                                                                     max_length=max_len)["input_ids"]
    conll = resolve(compose(["task=conll2003"]))
    raw = read_split(conll.data, conll.task, "dev", limit=300)
    expected = tok(raw.texts[0], is_split_into_words=True, truncation=True, max_length=max_len)["input_ids"]
    assert tokenize(raw, conll.task, tok, max_len)["input_ids"] == expected


# ---------------------------------------------------------------- item 7: damaged tokenized caches


def _entry(cache: Path) -> Path:
    (entry,) = [p for p in (cache / "tokenized").iterdir() if ".tmp" not in p.name]
    return entry


def _damage(entry: Path, how: str) -> str:
    arrow = next(entry.glob("*.arrow"))
    if how == "empty_entry":
        shutil.rmtree(entry)
        entry.mkdir()
        return str(entry)
    if how == "empty_file":
        arrow.write_bytes(b"")
    elif how == "truncated":
        with open(arrow, "r+b") as handle:
            handle.truncate(arrow.stat().st_size // 2)
    else:  # cut at a record-batch boundary: Arrow itself loads the first batches without complaint
        import pyarrow as pa

        with pa.memory_map(str(arrow)) as source:
            reader = pa.ipc.open_stream(source)
            next(iter(reader))
            boundary = source.tell()
        with open(arrow, "r+b") as handle:
            handle.truncate(boundary)
    return str(entry)


@pytest.mark.parametrize("how", ["truncated", "empty_file", "empty_entry", "batch_boundary"])
def test_damaged_tokenized_cache_warns_once_and_is_rebuilt(tmp_path, tok, capsys, how):
    cfg = resolve(compose(["task=sst2", f"data.cache_dir={tmp_path}", "trainer.max_len=16"]))
    first = load_split(cfg, "train", tok, 2500).to_list()  # three record batches of 1000 rows
    named = _damage(_entry(tmp_path), how)
    capsys.readouterr()
    again = load_split(cfg, "train", tok, 2500).to_list()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert again == first
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: tokenized cache {named} is damaged"), warnings
    assert load_split(cfg, "train", tok, 2500).to_list() == first and "warning" not in capsys.readouterr().err


def test_orphaned_temp_folders_are_cleaned_live_ones_kept(tmp_path, tok):
    cfg = resolve(compose(["task=rte", f"data.cache_dir={tmp_path}", "trainer.max_len=16"]))
    load_split(cfg, "dev", tok, 8)
    folder = tmp_path / "tokenized"
    name = _entry(tmp_path).name
    host = socket.gethostname()
    dead = [folder / f"{name}.tmp{2 ** 22 + 7}", folder / f"x.tmp{2 ** 22 + 8}@{host}"]  # above any pid_max
    live = [folder / f"y.tmp{os.getppid()}@{host}", folder / f"z.tmp{2 ** 22 + 9}@another-host"]
    for path in dead + live:
        path.mkdir()
        (path / "data-00000-of-00001.arrow").write_bytes(b"half")
    assert load_split(cfg, "dev", tok, 8)
    assert not any(p.exists() for p in dead) and all(p.exists() for p in live)
    assert (_entry(tmp_path) / ROWS_FILE).read_text() == "8"
