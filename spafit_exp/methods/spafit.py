"""SPAFIT: stratified layer groups (0-based, inclusive).

group 1 = layers 0..n1: frozen; group 2 = n1+1..n2: every bias of the layer (attention, both LayerNorms,
intermediate, output); group 3 = n2+1..L-1: LoRA on the type's modules plus the biases of the intermediate and
output sub-layers (intermediate.dense, output.dense, output.LayerNorm); attention biases stay frozen.
Head trainable; pooler and embeddings frozen. Reproduces the Params column of SPAFIT Table 2 exactly."""

from __future__ import annotations

import re
from dataclasses import dataclass

from omegaconf import MISSING

from spafit_exp.core.errors import ConfigError
from spafit_exp.methods import Method, register
from spafit_exp.methods.lora import LoraOptions, inject_lora, validate_lora
from spafit_exp.ops.params import freeze_all, is_bias, is_head, layer_of, unfreeze

# Layer-relative names of the group-3 biases; `.base_layer` is peft's wrapper and is ignored when matching.
_GROUP3_BIAS = re.compile(r"\.layer\.\d+\.(intermediate\.dense|output\.dense|output\.LayerNorm)\.bias$")


@dataclass
class SpafitOptions(LoraOptions):
    n1: int = MISSING  # last frozen layer (0-based; -1: none frozen)
    n2: int = MISSING  # last BitFit layer


def layer_groups(n1: int, n2: int, num_layers: int) -> tuple[list[int], list[int], list[int]]:
    return list(range(0, n1 + 1)), list(range(n1 + 1, n2 + 1)), list(range(n2 + 1, num_layers))


def validate_spafit(options: SpafitOptions, num_layers: int) -> None:
    n1, n2 = options.n1, options.n2
    if not -1 <= n1 < n2 < num_layers:
        raise ConfigError(f"method.n1={n1} method.n2={n2}: need -1 <= n1 < n2 < {num_layers} "
                          f"(the model has {num_layers} layers, 0-based)")
    validate_lora(options, num_layers)


@register("spafit", options=SpafitOptions, validate=validate_spafit)
def spafit(model, options: SpafitOptions) -> Method:
    num_layers = model.config.num_hidden_layers
    validate_spafit(options, num_layers)
    frozen, bitfit, lora_layers = layer_groups(options.n1, options.n2, num_layers)
    if lora_layers:
        model = inject_lora(model, options, lora_layers)
    freeze_all(model)

    def trains(name: str) -> bool:
        layer = layer_of(name)
        if layer in bitfit:
            return is_bias(name)
        if layer in lora_layers:
            return "lora_" in name or bool(_GROUP3_BIAS.search(name.replace(".base_layer", "")))
        return layer is None and is_head(name)

    unfreeze(model, trains)
    return Method(model, info={"groups": {"frozen": frozen, "bitfit": bitfit, "lora": lora_layers},
                                 "lora_type": options.lora_type, "r": options.r, "alpha": options.alpha})
