"""CI's tiny method quality check (scripts/sanity.py --tiny): every method in conf/method/ and method=subset with
every selector trains 320 SST-2 rows for two epochs at its recommended rate with the embedded model, and its
training loss must fall. A method that silently stops learning (a flat default rate, a broken update) fails here."""

import importlib.util

import pytest

from spafit_exp import REPO_ROOT

_spec = importlib.util.spec_from_file_location("sanity", REPO_ROOT / "scripts" / "sanity.py")
sanity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sanity)

CASES = sanity.cases(None)


def test_every_method_and_selector_is_a_case():
    names = {name for name, _ in CASES}
    assert {"full_ft", "spafit", "lora_ii", "stoc_tuning", "dps_mix", "subset/random", "subset/combined"} <= names
    assert not any(name == "subset" or name.endswith("/none") for name in names)


@pytest.mark.parametrize("name,overrides", CASES, ids=[name for name, _ in CASES])
def test_method_learns_tiny(name, overrides, tmp_path):
    args = sanity.parse(["--tiny", "--out", str(tmp_path)])
    row = sanity.run_case(name, overrides, args, in_process=True)
    if row["status"] == "n/a":  # SPAFIT's 24-layer presets on the 6-layer embedded model
        assert "layers" in row["reason"]
        return
    assert row["loss_falls"], f"{name}: training loss {row['first_loss']} -> {row['last_loss']} at lr={row['lr']}"
    assert row["status"] == "pass"
