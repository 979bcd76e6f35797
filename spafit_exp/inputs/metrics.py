"""GLUE metric definitions (sklearn / scipy; `evaluate.load("glue")` needs the hub) and seqeval for NER.

sklearn and scipy are imported on first use: together ~40 MB of resident memory that a run need not carry
through its first epoch of training."""

from __future__ import annotations

import numpy as np


def _accuracy(pred, gold):
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(gold, pred))


def _f1(pred, gold):
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, average="binary", pos_label=1))


def _mcc(pred, gold):
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(gold, pred))


def _pearson(pred, gold):
    from scipy.stats import pearsonr

    return float(pearsonr(pred, gold)[0])


def _spearman(pred, gold):
    from scipy.stats import spearmanr

    return float(spearmanr(pred, gold)[0])


def _seqeval_f1(pred, gold):
    from seqeval.metrics import f1_score as entity_f1

    return float(entity_f1(gold, pred, average="micro"))


METRICS = {
    "accuracy": _accuracy,
    "f1": _f1,
    "mcc": _mcc,
    "pearson": _pearson,
    "spearman": _spearman,
    "entity_f1": _seqeval_f1,
}


def compute(names, pred, gold) -> dict[str, float]:
    return {name: METRICS[name](pred, gold) for name in names}


def logits_to_predictions(logits: np.ndarray, task_type: str) -> np.ndarray:
    if task_type == "regression":
        return logits.reshape(-1)
    return logits.argmax(-1)


def token_predictions(pred: np.ndarray, gold: np.ndarray, tag_names: list[str]) -> tuple[list, list]:
    """Drop positions labelled -100 (sub-tokens, specials, padding) and map ids to IOB tags for seqeval."""
    pred_tags, gold_tags = [], []
    for p_row, g_row in zip(pred, gold):
        keep = g_row != -100
        pred_tags.append([tag_names[i] for i in p_row[keep]])
        gold_tags.append([tag_names[i] for i in g_row[keep]])
    return pred_tags, gold_tags


def evaluate_split(task, logits: list[np.ndarray], labels: list[np.ndarray]) -> dict[str, float]:
    """Metrics of one eval split from per-batch logits and labels (token tasks keep their per-row padding)."""
    if task.type == "token_classification":
        pred = [row for batch in logits for row in batch.argmax(-1)]
        gold = [row for batch in labels for row in batch]
        pred_tags, gold_tags = token_predictions(pred, gold, list(task.labels))
        return compute(task.metrics, pred_tags, gold_tags)
    pred = logits_to_predictions(np.concatenate(logits), task.type)
    return compute(task.metrics, pred, np.concatenate(labels))


def loss_falls(losses: list) -> bool:
    """Whether a logged training-loss curve [(step, loss), ...] falls: the mean of its last third is below the mean
    of its first third (robust to one noisy logging window). Fewer than two points cannot show a trend."""
    values = [float(v) for _, v in losses]
    if len(values) < 2:
        return False
    third = max(1, len(values) // 3)
    return sum(values[-third:]) / third < sum(values[:third]) / third
