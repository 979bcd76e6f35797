"""Task files: where each split lives (GLUE download-script layout under data.dir, or the hub), and the readers
that turn a file into texts + labels. A task's `reader:` names an entry of READERS; adding a file format is a
function here. Every problem is a ConfigError naming the file and line; a vendored file must match data/manifest.json."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spafit_exp import DATA_DIR
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.spec import DataSpec, TaskSpec

csv.field_size_limit(sys.maxsize)


# ---------------------------------------------------------------- where the files are


def data_dir(data: DataSpec) -> Path:
    return Path(data.dir).expanduser() if data.dir else DATA_DIR


def missing_data_message(path: Path, task: str) -> str:
    return (
        f"data file {path} not found (task={task}); get it with data.source=hub (needs the Hugging Face hub) "
        f"or point data.dir= at a glue_data folder that has it"
    )


def task_file(data: DataSpec, task: TaskSpec, split: str) -> Path:
    """Path of a split's file: the first of the task's folders under data.dir that has it."""
    root = data_dir(data)
    candidates = [root / folder / task.files[split] for folder in task.folders]
    return next((p for p in candidates if p.is_file()), candidates[0])


def check_data_files(data: DataSpec, task: TaskSpec) -> None:
    if data.source == "hub":
        return
    root = data_dir(data)
    if not root.is_dir():
        raise ConfigError(f"data.dir={root}: no such directory")
    for split in task.files:
        if split.startswith("test") and task.report != "test":  # unlabelled GLUE test: predictions only
            continue
        path = task_file(data, task, split)
        if not path.is_file():
            raise ConfigError(missing_data_message(path, task.name))
        checked_digest(path)  # a damaged vendored file is refused here, before the run directory is claimed


# ---------------------------------------------------------------- file identity and the vendored manifest

_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's content, hashed once per process per version of the file: a write changes ctime (and
    usually size or mtime), and unlike mtime, ctime cannot be set back by the tool that edited the file."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _DIGESTS:
        with open(path, "rb") as handle:
            _DIGESTS[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    return _DIGESTS[key]


@functools.cache
def _manifest() -> dict[Path, dict]:
    path = DATA_DIR / "manifest.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    return {(DATA_DIR.parent / e["path"]).resolve(): e for e in entries}


def vendored(path: Path) -> bool:
    return Path(path).resolve() in _manifest()


def checked_digest(path: Path) -> str:
    """The file's sha256; a vendored file (listed in data/manifest.json) must match its entry, or a run would train
    and report on other data than the tables claim. A user's own data.dir is not checked."""
    digest = file_digest(path)
    entry = _manifest().get(Path(path).resolve())
    if entry is not None and digest != entry["sha256"]:
        raise ConfigError(
            f"{path}: vendored data file differs from data/manifest.json ({Path(path).stat().st_size} bytes; expected "
            f"{entry['bytes']} bytes, {entry['rows']} rows, sha256 {entry['sha256'][:16]}...): truncated or edited; "
            f"restore it (git checkout -- {entry['path']}) or put your own copy in another folder and set data.dir")
    return digest


@contextmanager
def utf8_errors(path: Path):
    """A UnicodeDecodeError while reading `path` becomes one line naming the file, line and byte."""
    try:
        yield
    except UnicodeDecodeError:
        data = Path(path).read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data.count(b"\n", 0, err.start) + 1
            column = err.start - data.rfind(b"\n", 0, err.start)
            raise ConfigError(f"{path}:{line}: byte 0x{data[err.start]:02x} (column {column}) is not UTF-8; "
                              "save the file as UTF-8") from None
        raise ConfigError(f"{path}: not UTF-8; save the file as UTF-8") from None


def _check_last_row(path: Path, line_no: int) -> None:
    """A file cut short inside its last field still parses; only the missing line break shows it. A warning, not an
    error: some originals (CoLA's dev.tsv) end without one. Vendored files are checked by their hash instead."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(size - 1, 0))
        complete = size == 0 or handle.read(1) == b"\n"
    if not complete and not vendored(path):
        print(f"warning: {path}:{line_no}: the last row has no line break; check that the file is not cut short",
              file=sys.stderr)


# ---------------------------------------------------------------- readers


@dataclass
class RawSplit:
    texts: list[list[str]]  # one list per text field
    labels: list  # int class ids, floats (regression) or per-token tag lists
    source: str  # file path or hub id: names the data in errors and cache keys


# Complete numbers only: float() takes "4." (a "4.000" cut short), " 4", "nan" and "1_0"; int() takes " 1" and "+1".
_NUMBER = re.compile(r"[-+]?(\d+(\.\d+)?|\.\d+)([eE][-+]?\d+)?")
_INTEGER = re.compile(r"\d+")


def _glue_label(value: str, task: TaskSpec, where: str):
    if task.type == "regression":
        if not _NUMBER.fullmatch(value):
            raise ConfigError(f"{where}: label {value!r} is not a number")
        return float(value)
    if task.labels is not None:
        names = list(task.labels)
        if value not in names:
            raise ConfigError(f"{where}: label {value!r} not in {names}")
        return names.index(value)
    if not _INTEGER.fullmatch(value):
        raise ConfigError(f"{where}: label {value!r} is not an integer")
    label = int(value)
    if label >= task.num_labels:
        raise ConfigError(f"{where}: label {label} outside 0..{task.num_labels - 1}")
    return label


def read_glue_tsv(path: Path, task: TaskSpec, limit: int | None = None, labelled: bool = True) -> RawSplit:
    """GLUE download-script layout. QUOTE_NONE because of stray quotes; utf-8-sig strips MRPC's BOM.
    Unlabelled test files always have a header (even CoLA's); their labels come back as None."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        has_header = task.header or not labelled
        header = next(reader, None) if has_header else list(task.columns)
        if header is None:
            raise ConfigError(f"{path}: empty file")
        wanted = list(task.text_fields) + ([task.label_field] if labelled else [])
        missing = [c for c in wanted if c not in header]
        if missing:
            raise ConfigError(f"{path}: columns {missing} not in header {header}")
        idx = [header.index(c) for c in wanted]
        texts: list[list[str]] = [[] for _ in task.text_fields]
        labels = []
        line_no = 1
        for line_no, row in enumerate(reader, start=2 if has_header else 1):
            if limit is not None and len(labels) >= limit:
                break
            if len(row) != len(header):  # a row cut short, or a tab inside a text, shifts the columns
                raise ConfigError(f"{path}:{line_no}: expected {len(header)} tab-separated fields "
                                  f"({'as in the header' if has_header else 'task.columns'}), got {len(row)}")
            for field, i in zip(texts, idx):
                field.append(row[i])
            labels.append(_glue_label(row[idx[-1]], task, f"{path}:{line_no}") if labelled else None)
        else:
            _check_last_row(path, line_no)
    if not labels:
        raise ConfigError(f"{path}: no data rows")
    return RawSplit(texts, labels, str(path))


def read_trec(path: Path, task: TaskSpec, limit: int | None = None, labelled: bool = True) -> RawSplit:
    """UIUC question classification: `COARSE:fine question words`; latin-1 (one 0xF0 byte in the train file)."""
    names = list(task.labels)
    texts, labels = [], []
    line_no = 0
    with open(path, encoding="latin-1") as handle:
        for line_no, line in enumerate(handle, start=1):
            if limit is not None and len(labels) >= limit:
                break
            if not line.strip():
                continue
            tag, _, question = line.rstrip("\n").partition(" ")
            coarse = tag.split(":", 1)[0]
            if coarse not in names or not question:
                raise ConfigError(f"{path}:{line_no}: expected 'COARSE:fine question', coarse label in {names}")
            texts.append(question)
            labels.append(names.index(coarse))
        else:
            _check_last_row(path, line_no)
    if not labels:
        raise ConfigError(f"{path}: no data rows")
    return RawSplit([texts], labels, str(path))


def read_conll(path: Path, task: TaskSpec, limit: int | None = None, labelled: bool = True) -> RawSplit:
    """CoNLL-2003: one `token POS chunk NER` line per token, blank lines between sentences; NER tags in IOB2."""
    names = list(task.labels)
    sentences: list[list[str]] = []
    tags: list[list[int]] = []
    words: list[str] = []
    word_tags: list[int] = []
    line_no = 0
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append(words)
                    tags.append(word_tags)
                    words, word_tags = [], []
                    if limit is not None and len(sentences) >= limit:
                        break
                continue
            if len(fields) != 4 or fields[-1] not in names:
                raise ConfigError(f"{path}:{line_no}: expected 'token POS chunk NER' with NER in {names}")
            words.append(fields[0])
            word_tags.append(names.index(fields[-1]))
        else:
            _check_last_row(path, line_no)
    if words and (limit is None or len(sentences) < limit):
        sentences.append(words)
        tags.append(word_tags)
    if not sentences:
        raise ConfigError(f"{path}: no sentences")
    return RawSplit([sentences], tags, str(path))


READERS = {"glue_tsv": read_glue_tsv, "trec": read_trec, "conll": read_conll}


def read_local(data: DataSpec, task: TaskSpec, split: str, limit: int | None = None) -> RawSplit:
    path = task_file(data, task, split)
    if not path.is_file():
        raise ConfigError(missing_data_message(path, task.name))
    checked_digest(path)
    labelled = not split.startswith("test") or task.report == "test"  # GLUE's test files have no labels
    with utf8_errors(path):
        return READERS[task.reader](path, task, limit, labelled=labelled)


def read_hub(task: TaskSpec, split: str, limit: int | None = None) -> RawSplit:
    hub = task.hub
    hub_split = hub.splits[split]
    if limit is not None:
        hub_split = f"{hub_split}[:{limit}]"
    import datasets  # here: `sweep plan` reads task_file without the hub's libraries

    ds = datasets.load_dataset(hub.path, hub.name, split=hub_split)
    texts = [list(ds[f]) for f in hub.text_fields]
    return RawSplit(texts, list(ds[hub.label_field]), f"hub:{hub.path}/{hub.name}/{hub_split}")


def read_split(data: DataSpec, task: TaskSpec, split: str, limit: int | None = None) -> RawSplit:
    if data.source == "hub":
        return read_hub(task, split, limit)
    return read_local(data, task, split, limit)
