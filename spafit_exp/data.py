"""Task data: readers for the vendored files (GLUE TSV layout) and the hub, tokenization with a disk cache,
and a dynamic-padding collator. Knows nothing about methods."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from omegaconf import DictConfig, OmegaConf

from spafit_exp.config import ConfigError, missing_data_message, task_file

csv.field_size_limit(sys.maxsize)


@dataclass
class RawSplit:
    texts: list[list[str]]  # one list per text field
    labels: list  # int class ids, floats (regression) or per-token tag lists
    source: str  # file path or hub id: names the data in errors and cache keys


# ---------------------------------------------------------------- readers


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
    return READERS[cfg.task.reader](path, cfg.task, limit, labelled=not split.startswith("test"))


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


# ---------------------------------------------------------------- tokenization + cache


def _cache_root(cfg: DictConfig) -> Path:
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir).expanduser()
    return Path(os.environ.get("SPAFIT_CACHE", Path.home() / ".cache" / "spafit_exp"))


def _cache_key(cfg: DictConfig, split: str, limit: int | None, tokenizer) -> str:
    source = cfg.data.source
    if source == "local":
        path = task_file(cfg, split)
        stat = path.stat()
        source = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    task = OmegaConf.to_container(cfg.task, resolve=True)
    task.pop("batch_size", None)
    blob = json.dumps([source, task, split, limit, cfg.trainer.max_len, tokenizer.name_or_path,
                       len(tokenizer), type(tokenizer).__name__], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def tokenize(raw: RawSplit, task: DictConfig, tokenizer, max_len: int) -> datasets.Dataset:
    if task.type == "token_classification":
        return _tokenize_tokens(raw, tokenizer, max_len)
    enc = tokenizer(*raw.texts, truncation=True, max_length=max_len)
    columns = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    columns["labels"] = raw.labels
    return datasets.Dataset.from_dict(columns)


def _tokenize_tokens(raw: RawSplit, tokenizer, max_len: int) -> datasets.Dataset:
    """Word-level tags -> first-sub-token labels; other sub-tokens and specials get -100 (ignored)."""
    words = raw.texts[0]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_len)
    labels = []
    for i, tags in enumerate(raw.labels):
        previous = None
        row = []
        for word in enc.word_ids(i):
            row.append(-100 if word is None or word == previous else tags[word])
            previous = word
        labels.append(row)
    columns = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    columns["labels"] = labels
    return datasets.Dataset.from_dict(columns)


def load_split(cfg: DictConfig, split: str, tokenizer, limit: int | None = None) -> datasets.Dataset:
    """Tokenized split, cached on disk under a key of file identity, task, tokenizer and max_len."""
    cache = _cache_root(cfg) / "tokenized" / f"{cfg.task.name}-{split}-{_cache_key(cfg, split, limit, tokenizer)}"
    if cache.is_dir():
        return datasets.load_from_disk(str(cache))
    ds = tokenize(read_split(cfg, split, limit), cfg.task, tokenizer, cfg.trainer.max_len)
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    ds.save_to_disk(str(tmp))
    try:
        tmp.rename(cache)
    except OSError:  # another process won the race: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(cache))


# ---------------------------------------------------------------- batching


class PadCollator:
    """Dynamic padding to the longest row of the batch (labels of token tasks padded with -100)."""

    def __init__(self, pad_id: int, regression: bool = False):
        self.pad_id = pad_id
        self.label_dtype = torch.float32 if regression else torch.long

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        batch = {}
        for key, fill in (("input_ids", self.pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows], dtype=torch.long)
        labels = [r["labels"] for r in rows]
        if isinstance(labels[0], list):
            labels = [lab + [-100] * (width - len(lab)) for lab in labels]
        batch["labels"] = torch.tensor(labels, dtype=self.label_dtype)
        return batch


@dataclass
class TaskData:
    train: list[dict]  # tokenized rows, in memory: cheaper to index per step than Arrow
    evals: dict[str, list[dict]]  # "dev", and "dev_mm" for MNLI
    collate: PadCollator


def load_task_data(cfg: DictConfig, tokenizer) -> TaskData:
    train = load_split(cfg, "train", tokenizer, cfg.trainer.max_train_samples)
    evals = {split: load_split(cfg, split, tokenizer, cfg.trainer.max_eval_samples)
             for split in cfg.task.files if split.startswith("dev")}
    collate = PadCollator(tokenizer.pad_token_id or 0, regression=cfg.task.type == "regression")
    return TaskData(train.to_list(), {k: v.to_list() for k, v in evals.items()}, collate)
