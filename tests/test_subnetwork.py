"""The sub-network's config checks (spafit_exp/methods/subnetwork.py) name the key that set a bad value; the kernels
underneath (ops/masking.py) raise plain ValueError and know no config keys."""

import pytest
from torch import nn

from spafit_exp.core.errors import ConfigError
from spafit_exp.methods.subnetwork import check_candidates, check_size_options, subset_size
from spafit_exp.ops.masking import candidate_params, subnetwork_size


def test_size_rule():
    assert subset_size(7, 0.9, 10, 3, "method") == 7  # k wins
    assert subset_size(None, 0.5, 10, 3, "method") == 5  # else the fraction of the candidates
    assert subset_size(None, None, 10, 3, "selector") == 3  # else the default (the model's BitFit size)


@pytest.mark.parametrize("key", ["method", "selector"])
def test_size_outside_the_candidates_names_the_key(key):
    with pytest.raises(ConfigError, match=rf"^{key}\.k=11: must be in \[1, 10\] \(the number of candidate elements\)$"):
        subset_size(11, None, 10, 3, key)
    with pytest.raises(ConfigError, match=rf"^{key}\.k=0: must be in \[1, 10\]"):
        subset_size(None, 0.01, 10, 3, key)  # a fraction that rounds to nothing


def test_options_checked_before_weights():
    with pytest.raises(ConfigError, match=r"^selector\.k=0: must be an integer >= 1$"):
        check_size_options(0, None, "selector")
    with pytest.raises(ConfigError, match=r"^method\.fraction=1\.5: must be in \(0, 1\]$"):
        check_size_options(None, 1.5, "method")
    with pytest.raises(ConfigError, match=r"^method\.candidates=decoder: must be one of encoder, no_embeddings$"):
        check_candidates("decoder")
    check_size_options(3, None, "method")
    check_candidates("no_embeddings")


def test_kernels_raise_value_errors_without_config_keys():
    for call in (lambda: subnetwork_size(11, None, 10, 3), lambda: candidate_params(nn.Linear(2, 2), "decoder")):
        with pytest.raises(ValueError) as raised:
            call()
        assert not isinstance(raised.value, ConfigError)
        assert "method." not in str(raised.value) and "selector." not in str(raised.value)
