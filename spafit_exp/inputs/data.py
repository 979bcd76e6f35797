"""Task data: tokenization with a disk cache (the project's one cache root), the dynamic-padding collator, and
WikiText MLM batches. Reading the files is readers.py's job. Knows nothing about methods."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch

from spafit_exp import DATA_DIR
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.spec import DataSpec, RunSpec, TaskSpec, plain
from spafit_exp.core.stored import pid_alive
from spafit_exp.inputs.readers import RawSplit, checked_digest, missing_data_message, read_split, task_file, utf8_errors

# ---------------------------------------------------------------- tokenization + cache


def cache_root(data: DataSpec) -> Path:
    """Where tokenized splits, pre-tuned decoders and selection statistics are cached: data.cache_dir, else
    $SPAFIT_CACHE, else ~/.cache/spafit_exp."""
    if data.cache_dir:
        return Path(data.cache_dir).expanduser()
    return Path(os.environ.get("SPAFIT_CACHE", Path.home() / ".cache" / "spafit_exp"))


STAGE_SEED = 1  # the seed of stages shared by every repetition (decoder.stage_seed=shared): trainer.seed's default
STAGE_SEEDS = ("shared", "run")


def stage_seed(spec: RunSpec) -> int:
    """The seed of the stages before a run (decoder pre-tuning, selection statistics, diff pruning's fine-tune).
    `decoder.stage_seed=shared` (default): STAGE_SEED for every repetition, as the subset paper tunes one decoder
    from one initialisation and shares it and its statistics across repetitions; `run`: the run's own seed. A
    randomly initialised model (`model.init=random`) always uses the run's: its theta0 is a function of that seed."""
    shared = spec.decoder.stage_seed == "shared"
    return STAGE_SEED if shared and spec.model.init != "random" else int(spec.trainer.seed)


def run_key(spec: RunSpec, *extra, seed: int | None = None) -> str:
    """What a cached decoder or statistic depends on: model, task data slice, the stage's seed (`seed`, default
    `stage_seed(spec)`: not the run's under shared stages), max_len, and `extra`."""
    seed = stage_seed(spec) if seed is None else seed
    blob = json.dumps([plain(spec.model), spec.task.name, spec.data.source, _data_identity(spec.data, spec.task), seed,
                       spec.trainer.max_train_samples, spec.trainer.max_len, *extra], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _data_identity(data: DataSpec, task: TaskSpec) -> list[str]:
    """The task files' content (local data), not where they are: an edited file never reuses a decoder or a
    statistic computed on its old rows."""
    if data.source != "local":
        return []
    paths = [task_file(data, task, split) for split in task.files]
    return [checked_digest(path) for path in paths if path.is_file()]


def _cache_key(spec: RunSpec, split: str, limit: int | None, tokenizer) -> str:
    source = spec.data.source
    if source == "local":  # the content, not size + mtime: an edit that keeps both must not reuse stale rows
        path = task_file(spec.data, spec.task, split)
        if not path.is_file():
            raise ConfigError(missing_data_message(path, spec.task.name))
        source = "sha256:" + checked_digest(path)
    task = plain(spec.task)
    task.pop("batch_size", None)
    task.pop("size", None)  # an estimate for sweep plans: the rows stay the same
    blob = json.dumps([source, task, split, limit, spec.trainer.max_len, tokenizer.name_or_path,
                       len(tokenizer), type(tokenizer).__name__], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# Characters kept per text (and words per sentence) for each token of max_len: far more than any tokenizer needs
# for max_len tokens, so normal rows tokenize identically, while a 5 MB line is not tokenized in full first.
CHARS_PER_TOKEN = 32


def clip(texts: list[str], max_len: int) -> list[str]:
    cap = max_len * CHARS_PER_TOKEN
    return [text[:cap] for text in texts]


def tokenize(raw: RawSplit, task: TaskSpec, tokenizer, max_len: int) -> datasets.Dataset:
    if task.type == "token_classification":
        return _tokenize_tokens(raw, tokenizer, max_len)
    enc = tokenizer(*(clip(field, max_len) for field in raw.texts), truncation=True, max_length=max_len)
    columns = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    columns["labels"] = raw.labels
    return datasets.Dataset.from_dict(columns)


def _tokenize_tokens(raw: RawSplit, tokenizer, max_len: int) -> datasets.Dataset:
    """Word-level tags -> first-sub-token labels; other sub-tokens and specials get -100 (ignored)."""
    words = [clip(sentence[:max_len * CHARS_PER_TOKEN], max_len) for sentence in raw.texts[0]]
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


def load_split(spec: RunSpec, split: str, tokenizer, limit: int | None = None) -> datasets.Dataset:
    """Tokenized split, cached on disk under a key of file content, task, tokenizer and max_len."""
    cache = cache_root(spec.data) / "tokenized" / f"{spec.task.name}-{split}-{_cache_key(spec, split, limit, tokenizer)}"
    _drop_orphaned_temps(cache.parent)
    if cache.is_dir():
        cached = _read_cache(cache)
        if cached is not None:
            return cached
    ds = tokenize(read_split(spec.data, spec.task, split, limit), spec.task, tokenizer, spec.trainer.max_len)
    tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}@{socket.gethostname()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process that had our pid (containers reuse pids)
    _quiet(ds.save_to_disk, str(tmp))
    (tmp / ROWS_FILE).write_text(str(len(ds)))
    try:
        tmp.rename(cache)
    except OSError:  # another process won the race: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"tokenized {spec.task.name}/{split}: {len(ds)} rows (cached)")
    cached = _read_cache(cache)
    return ds if cached is None else cached


ROWS_FILE = "spafit_rows"  # the row count, written last: Arrow cut at a batch boundary loads with fewer rows, silently
_TEMP = re.compile(r"\.tmp(\d+)(?:@(.+))?$")


def _read_cache(cache: Path) -> datasets.Dataset | None:
    """The cached split, or None after one warning when it is damaged (cut short, emptied, half-written): the
    entry is dropped and the split tokenized again, so a damaged cache never fails every rerun."""
    try:
        ds = _quiet(datasets.load_from_disk, str(cache))
        rows = int((cache / ROWS_FILE).read_text())
        if len(ds) != rows:
            raise ValueError(f"{len(ds)} rows of {rows}")
        return ds
    except Exception as err:  # any failure to read a derived file means: make it again
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        print(f"warning: tokenized cache {cache} is damaged ({reason}); dropped, tokenizing again", file=sys.stderr)
        shutil.rmtree(cache, ignore_errors=True)
        return None


def _drop_orphaned_temps(folder: Path) -> None:
    """Remove half-written cache folders of processes that died on this host (a live writer's are kept)."""
    if not folder.is_dir():
        return
    host = socket.gethostname()
    for path in folder.iterdir():
        match = _TEMP.search(path.name)
        if match and match[2] in (None, host) and int(match[1]) != os.getpid() and not pid_alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True)


def _quiet(fn, *args):
    """datasets' progress bars off around a cache read/write (one line above says what happened)."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return fn(*args)
    finally:
        if enabled:
            datasets.enable_progress_bars()


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
    evals: dict[str, list[dict]]  # selection splits: "dev" (and "dev_mm" for MNLI)
    collate: PadCollator
    tests: dict[str, list[dict]] = field(default_factory=dict)  # "test" where the task reports a labelled test set


def holdout_indices(rows: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(dev, train) row indices: a seeded `fraction` of the training file held out for selection (TREC-6 has no
    dev set; Flair, the subset paper's framework, samples 10% of train). Fixed per task, not per run seed, so
    every run of a grid selects on the same rows."""
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = round(rows * fraction)
    return sorted(order[:cut]), sorted(order[cut:])


def _limit(ds: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return ds.select(range(min(limit, len(ds)))) if limit else ds


def load_task_data(spec: RunSpec, tokenizer) -> TaskData:
    t, task = spec.trainer, spec.task
    if task.dev_holdout:
        full = load_split(spec, "train", tokenizer)
        dev_rows, train_rows = holdout_indices(len(full), task.dev_holdout.fraction, task.dev_holdout.seed)
        train = _limit(full.select(train_rows), t.max_train_samples)
        evals = {"dev": _limit(full.select(dev_rows), t.max_eval_samples)}
    else:
        train = load_split(spec, "train", tokenizer, t.max_train_samples)
        evals = {split: load_split(spec, split, tokenizer, t.max_eval_samples)
                 for split in task.files if split.startswith("dev")}
    tests = ({"test": load_split(spec, "test", tokenizer, t.max_eval_samples)} if task.report == "test" else {})
    collate = PadCollator(tokenizer.pad_token_id or 0, regression=task.type == "regression")
    return TaskData(train.to_list(), {k: v.to_list() for k, v in evals.items()}, collate,
                    {k: v.to_list() for k, v in tests.items()})


# ---------------------------------------------------------------- WikiText MLM batches


def wikitext_paragraphs(path: Path | None = None) -> list[str]:
    """One text per paragraph line of a raw WikiText file (headings skipped); default: the vendored WikiText-2."""
    path = Path(path) if path else DATA_DIR / "wikitext2" / "wiki.test.raw"
    if not path.is_file():
        raise ConfigError(f"wikitext file {path}: not found")
    checked_digest(path)
    with utf8_errors(path):
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("=")]


def mlm_batches(texts: list[str], tokenizer, max_len: int, batch_size: int, seed: int,
                mask_probability: float = 0.15) -> list[dict[str, torch.Tensor]]:
    """BERT-style masked batches (80% [MASK] / 10% random / 10% kept), reproducible from `seed`."""
    from transformers import DataCollatorForLanguageModeling

    encoded = tokenizer(clip(texts, max_len), truncation=True, max_length=max_len)["input_ids"]
    torch.manual_seed(seed)  # the collator's masking draws from the global generator
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mask_probability, return_tensors="pt")
    return [collator([{"input_ids": ids} for ids in encoded[i:i + batch_size]])
            for i in range(0, len(encoded), batch_size)]


def mlm_examples(texts: list[str], tokenizer, max_len: int, seed: int,
                 mask_probability: float = 0.15) -> list[dict[str, list[int]]]:
    """One masked row per text (input_ids, attention_mask, labels), each masked on its own: a row's masking does not
    depend on the rows it is later batched with, so per-example statistics do not depend on the chunk size."""
    return [{"input_ids": b["input_ids"][0].tolist(), "attention_mask": [1] * b["input_ids"].shape[1],
             "labels": b["labels"][0].tolist()}
            for b in mlm_batches(texts, tokenizer, max_len, 1, seed, mask_probability)]
