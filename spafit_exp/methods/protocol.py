"""What the loop, the resume checkpoint and the run's record need from a method: which parameters train, the
optimizer, hooks around the optimizer step, the state a resume carries, what to save of the trained model and
the trainable counts (typed). The base class is plain fine-tuning of the tensors left `requires_grad`; a method
subclasses it for what it changes (methods/masked.py, dps.py, regularized.py, subset.py)."""

from __future__ import annotations

import torch
from torch import nn

from spafit_exp.ops.optim import make_optimizer
from spafit_exp.ops.params import ParamCounts, count_params, trainable_state

__all__ = ["Method", "ParamCounts"]


class Method:
    """A method applied to a model (`apply_method`): the loop calls every hook, in the order of the docstrings."""

    evaluate_only = False  # the model as prepared is the result (e.g. diff pruning without retraining)

    def __init__(self, model: nn.Module, info: dict | None = None):
        self.model = model
        self.info = {} if info is None else info  # facts for results.json's `method_info`

    def counts(self) -> ParamCounts:
        """Trainable and total parameters; element-level methods count the elements a step updates."""
        return ParamCounts(*count_params(self.model))

    def make_optimizer(self, trainer) -> torch.optim.Optimizer:
        """Built once, before training: AdamW over the trainable tensors unless the method's maths differ (e.g.
        masked updates that leave unselected elements and their moments untouched)."""
        return make_optimizer(self.model, trainer)

    def on_schedule(self, total_steps: int) -> None:
        """Told the run's optimizer steps before training (methods whose schedule is a fraction of the run)."""

    def before_step(self) -> None:
        """Every optimizer step, after gradient clipping, before `optimizer.step()`."""

    def after_step(self) -> None:
        """Every optimizer step, after `optimizer.step()` (e.g. a projection)."""

    def state_dict(self) -> dict | None:
        """Method state a resume checkpoint carries next to the optimizer's (e.g. a sampler's generator); None:
        nothing."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Put back what `state_dict` returned (never called with None)."""

    def export_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """What to keep of the trained `model` (the best epoch's, saved as trainable.safetensors): every trainable
        tensor; sparse for fixed subsets."""
        return trainable_state(model)

    def import_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Put an `export_state` back into `model` (a saved run reloaded, the best epoch scored after training)."""
        own = dict(model.named_parameters())
        for name, tensor in state.items():
            own[name].data.copy_(tensor)

    def summarize(self, best_state: dict[str, torch.Tensor]) -> dict:
        """Facts about the trained model for `method_info`, from the best epoch's exported tensors."""
        return {}
