"""Task files: where each split lives (GLUE download-script layout under data.dir, or the hub), and the readers
that turn a file into texts + labels. A task's `reader:` names an entry of READERS; adding a file format is a
function here. Every problem is a ConfigError naming the file and line."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
from omegaconf import DictConfig

from spafit_exp import DATA_DIR
from spafit_exp.errors import ConfigError

csv.field_size_limit(sys.maxsize)


# ---------------------------------------------------------------- where the files are


def data_dir(cfg: DictConfig) -> Path:
    return Path(cfg.data.dir).expanduser() if cfg.data.dir else DATA_DIR


def missing_data_message(path: Path, task: str) -> str:
    return (
        f"data file {path} not found (task={task}); get it with data.source=hub (needs the Hugging Face hub) "
        f"or point data.dir= at a glue_data folder that has it"
    )


def task_file(cfg: DictConfig, split: str) -> Path:
    """Path of a split's file: the first of the task's folders under data.dir that has it."""
    root = data_dir(cfg)
    candidates = [root / folder / cfg.task.files[split] for folder in cfg.task.folders]
    return next((p for p in candidates if p.is_file()), candidates[0])


def check_data_files(cfg: DictConfig) -> None:
    if cfg.data.source == "hub":
        return
    root = data_dir(cfg)
    if not root.is_dir():
        raise ConfigError(f"data.dir={root}: no such directory")
    for split in cfg.task.files:
        if split.startswith("test") and cfg.task.report != "test":  # unlabelled GLUE test: predictions only
            continue
        path = task_file(cfg, split)
        if not path.is_file():
            raise ConfigError(missing_data_message(path, cfg.task.name))


# ---------------------------------------------------------------- readers


@dataclass
class RawSplit:
    texts: list[list[str]]  # one list per text field
    labels: list  # int class ids, floats (regression) or per-token tag lists
    source: str  # file path or hub id: names the data in errors and cache keys


def _glue_label(value: str, task: DictConfig, where: str):
    if task.type == "regression":
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: label {value!r} is not a number") from None
    if task.labels is not None:
        names = list(task.labels)
        if value not in names:
            raise ConfigError(f"{where}: label {value!r} not in {names}")
        return names.index(value)
    try:
        label = int(value)
    except ValueError:
        raise ConfigError(f"{where}: label {value!r} is not an integer") from None
    if not 0 <= label < task.num_labels:
        raise ConfigError(f"{where}: label {label} outside 0..{task.num_labels - 1}")
    return label


def read_glue_tsv(path: Path, task: DictConfig, limit: int | None = None, labelled: bool = True) -> RawSplit:
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
        for line_no, row in enumerate(reader, start=2 if has_header else 1):
            if limit is not None and len(labels) >= limit:
                break
            if len(row) <= max(idx):
                raise ConfigError(f"{path}:{line_no}: expected at least {max(idx) + 1} tab-separated fields, got {len(row)}")
            for field, i in zip(texts, idx):
                field.append(row[i])
            labels.append(_glue_label(row[idx[-1]], task, f"{path}:{line_no}") if labelled else None)
    if not labels:
        raise ConfigError(f"{path}: no data rows")
    return RawSplit(texts, labels, str(path))


def read_trec(path: Path, task: DictConfig, limit: int | None = None, labelled: bool = True) -> RawSplit:
    """UIUC question classification: `COARSE:fine question words`; latin-1 (one 0xF0 byte in the train file)."""
    names = list(task.labels)
    texts, labels = [], []
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
    if not labels:
        raise ConfigError(f"{path}: no data rows")
    return RawSplit([texts], labels, str(path))


def read_conll(path: Path, task: DictConfig, limit: int | None = None, labelled: bool = True) -> RawSplit:
    """CoNLL-2003: one `token POS chunk NER` line per token, blank lines between sentences; NER tags in IOB2."""
    names = list(task.labels)
    sentences: list[list[str]] = []
    tags: list[list[int]] = []
    words: list[str] = []
    word_tags: list[int] = []
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
    if words and (limit is None or len(sentences) < limit):
        sentences.append(words)
        tags.append(word_tags)
    if not sentences:
        raise ConfigError(f"{path}: no sentences")
    return RawSplit([sentences], tags, str(path))


READERS = {"glue_tsv": read_glue_tsv, "trec": read_trec, "conll": read_conll}


def read_local(cfg: DictConfig, split: str, limit: int | None = None) -> RawSplit:
    path = task_file(cfg, split)
    if not path.is_file():
        raise ConfigError(missing_data_message(path, cfg.task.name))
    labelled = not split.startswith("test") or cfg.task.report == "test"  # GLUE's test files have no labels
    return READERS[cfg.task.reader](path, cfg.task, limit, labelled=labelled)


def read_hub(cfg: DictConfig, split: str, limit: int | None = None) -> RawSplit:
    hub = cfg.task.hub
    hub_split = hub.splits[split]
    if limit is not None:
        hub_split = f"{hub_split}[:{limit}]"
    ds = datasets.load_dataset(hub.path, hub.name, split=hub_split)
    texts = [list(ds[f]) for f in hub.text_fields]
    return RawSplit(texts, list(ds[hub.label_field]), f"hub:{hub.path}/{hub.name}/{hub_split}")


def read_split(cfg: DictConfig, split: str, limit: int | None = None) -> RawSplit:
    return (read_hub if cfg.data.source == "hub" else read_local)(cfg, split, limit)
