"""Each record's peak memory is its own run's: in a basic-launcher sweep several runs share one process, whose
lifetime peak (ru_maxrss) would hand every later run the largest earlier one's (issue 31, found with the plots)."""

import gc
import sys

import pytest

from spafit_exp.run import console
from spafit_exp.run.app import run
from tests.conftest import TINY_RUN, compose

GIB = 2**30


@pytest.mark.skipif(not sys.platform.startswith("linux") or console._vm_hwm() is None, reason="Linux /proc only")
def test_a_later_run_in_the_same_process_does_not_inherit_an_earlier_peak(tmp_path):
    if not console.reset_peak_memory():
        pytest.skip("this kernel refuses to reset the peak resident size")
    before = console._vm_hwm()
    spike = bytearray(GIB)  # an earlier job's peak in the same process (zero-filled: the pages are touched)
    del spike
    gc.collect()
    record = run(compose([*TINY_RUN, f"run.root={tmp_path}"]))
    assert record["memory"]["peak_scope"] == "run"
    assert record["memory"]["peak_bytes"] < before + GIB // 2  # the tiny run's own peak, not the 1 GiB spike


def test_without_a_reset_the_peak_says_it_is_the_process_lifetime():
    memory = console.peak_memory(console.torch.device("cpu"), run_scope=False)
    assert memory["peak_scope"] == "process" and memory["peak_bytes"] > 0
