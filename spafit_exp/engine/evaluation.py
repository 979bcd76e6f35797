"""Scoring a model on evaluation loaders with the task's metrics, gathered across processes (the loop's dev, test
and train-rows evaluations). Metric names carry the split's suffix: `accuracy` on dev, `accuracy_mm` on dev_mm."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from spafit_exp.core.spec import TaskSpec
from spafit_exp.inputs import metrics


def _metric_key(split: str, name: str) -> str:
    suffix = split.split("_", 1)[1] if "_" in split else ""  # "dev" / "test" -> "", "dev_mm" -> "_mm"
    return f"{name}_{suffix}" if suffix else name


@torch.inference_mode()
def evaluate(model, loaders: dict[str, DataLoader], task: TaskSpec, accelerator: Accelerator) -> dict[str, float]:
    model.eval()
    scores = {}
    for split, loader in loaders.items():
        logits, labels = [], []
        for batch in loader:
            gold = batch.pop("labels")
            out = model(**batch).logits
            if task.type == "token_classification":
                out = accelerator.pad_across_processes(out, dim=1)
                gold = accelerator.pad_across_processes(gold, dim=1, pad_index=-100)
            out, gold = accelerator.gather_for_metrics((out, gold))
            logits.append(out.float().cpu().numpy())
            labels.append(gold.cpu().numpy())
        for name, value in metrics.evaluate_split(task, logits, labels).items():
            scores[_metric_key(split, name)] = value
    model.train()
    return scores
