"""LoRA through peft: type I adapts query/key/value, type II also attention.output.dense (SPAFIT Table 1); type qv
adapts query and value only (the subset paper's LoRA, as in the LoRA paper's GLUE runs).

Modules are selected with an exact regex over module names, so `attention.output.dense` never matches the FFN's
`output.dense`, and a layer subset (SPAFIT's third group) is part of the same pattern."""

from __future__ import annotations

import re
from dataclasses import dataclass

from omegaconf import MISSING
from torch import nn

from spafit_exp.core.errors import ConfigError
from spafit_exp.methods import Method, MethodOptions, register
from spafit_exp.ops.params import freeze_all, is_head, unfreeze

LORA_MODULES = {
    "I": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "II": ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"),
    "qv": ("attention.self.query", "attention.self.value"),
}


def lora_pattern(model: nn.Module, lora_type: str, layers: list[int]) -> str:
    """Regex (peft full-matches it) naming the type's modules in the given layers, resolved from the model."""
    if lora_type not in LORA_MODULES:
        raise ConfigError(f"method.lora_type={lora_type}: must be one of {', '.join(LORA_MODULES)}")
    names = [n for n, _ in model.named_modules()]
    prefix = next((n[: n.index("encoder.layer.")] for n in names if "encoder.layer." in n), None)
    if prefix is None:
        raise ConfigError(f"{type(model).__name__}: no encoder.layer.<i> modules to adapt")
    for suffix in LORA_MODULES[lora_type]:
        if f"{prefix}encoder.layer.0.{suffix}" not in names:
            raise ConfigError(f"{type(model).__name__}: has no module encoder.layer.0.{suffix} for LoRA-{lora_type}")
    layer_alt = "|".join(str(i) for i in layers)
    module_alt = "|".join(re.escape(s) for s in LORA_MODULES[lora_type])
    return rf"{re.escape(prefix)}encoder\.layer\.({layer_alt})\.({module_alt})"


@dataclass
class LoraOptions(MethodOptions):
    lora_type: str = MISSING
    r: int = MISSING
    alpha: float = MISSING
    dropout: float = MISSING


def inject_lora(model: nn.Module, options: LoraOptions, layers: list[int]) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model  # ~3 s to import: only runs that use LoRA pay it

    config = LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout, bias="none",
                        target_modules=lora_pattern(model, options.lora_type, layers))
    return inject_adapter_in_model(config, model)


def validate_lora(options: LoraOptions, num_layers: int) -> None:
    if options.lora_type not in LORA_MODULES:
        raise ConfigError(f"method.lora_type={options.lora_type}: must be one of {', '.join(LORA_MODULES)}")
    if not options.r >= 1:
        raise ConfigError(f"method.r={options.r}: must be an integer >= 1")
    if not options.alpha > 0:
        raise ConfigError(f"method.alpha={options.alpha}: must be > 0")
    if not 0 <= options.dropout < 1:
        raise ConfigError(f"method.dropout={options.dropout}: must be in [0, 1)")


@register("lora", options=LoraOptions, validate=validate_lora)
def lora(model, options: LoraOptions) -> Method:
    num_layers = model.config.num_hidden_layers
    model = inject_lora(model, options, list(range(num_layers)))
    freeze_all(model)
    unfreeze(model, lambda n: "lora_" in n or is_head(n))
    return Method(model, info={"lora_type": options.lora_type, "r": options.r, "alpha": options.alpha})
