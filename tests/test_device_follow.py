"""Methods are prepared on the host and the loop moves the model to the accelerator afterwards: the per-step
samplers' generators and DPS's layer state must follow the weights to their device."""

import pytest
import torch

from spafit_exp.methods import apply_method
from spafit_exp.ops.sampling import DeviceGenerator
from tests.helpers import tiny_model
from tests.test_dps import dps, run
from tests.test_masked import masked_cfg, one_step


def test_device_generator_is_made_at_first_draw_and_applies_a_state_loaded_before():
    reference = torch.Generator().manual_seed(7)
    torch.rand(3, generator=reference)
    saved = reference.get_state()
    rng = DeviceGenerator(7)
    assert rng.get_state() is None  # nothing drawn: the seed alone says it
    rng.set_state(saved)  # a resume loads its state before the first draw
    assert torch.equal(torch.rand(4, generator=rng.on("cpu")), torch.rand(4, generator=reference))
    assert rng.on("meta").device.type == "cpu"  # a dry run draws nothing: the host's generator stands in


def test_fresh_device_generator_draws_the_seeded_sequence():
    assert torch.equal(torch.rand(5, generator=DeviceGenerator(3).on("cpu")),
                       torch.rand(5, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("method", ["stoc_tuning", "random_tuning"])
def test_per_step_sampler_makes_its_generator_where_the_weights_are_at_its_first_draw(method):
    prepared = apply_method(tiny_model("bert"), masked_cfg(method))
    hook = prepared
    assert hook.rng.get_state() is None  # not made while the model is still on the host
    one_step(prepared)
    assert hook.generator.device == next(prepared.model.parameters()).device
    assert hook.rng.get_state() is not None


def test_dps_layer_state_follows_its_moved_weight():
    prepared = dps()
    run(prepared, 2)
    hook = prepared
    layer = hook.layers[0]
    kept_target = layer.target is layer.pretrained
    # Module.to(cuda) moves each parameter's data in place, so the layer's weight is on the GPU afterwards; a CPU
    # machine has no second real device: the layer's weight stands on meta
    layer.weight = torch.nn.Parameter(torch.empty_like(layer.weight, device="meta"))
    layer.follow_weight()
    for name in ("pretrained", "mask", "grad_sq", "kept", "target"):
        assert getattr(layer, name).device.type == "meta", name
    assert (layer.target is layer.pretrained) == kept_target


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("method", ["stoc_tuning", "top_tuning", "random_tuning", "dps_mix"])
def test_methods_prepared_on_the_host_train_on_the_gpu(method):
    prepared = dps() if method == "dps_mix" else apply_method(tiny_model("bert"), masked_cfg(method))
    prepared.model.to("cuda")
    if method == "dps_mix":
        run(prepared, 3)
    else:
        for seed in range(3):
            one_step(prepared, seed)
