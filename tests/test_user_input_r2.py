"""User input, round 2 (issue 31 items 2, 3, 12, 13): a `+key` no schema has is refused in one line with its close
match; tracking=wandb without an API key is refused before anything loads (offline check, by environment); `sweep
status` of a folder that does not exist is refused; `--help` names the other commands; `sweep plan` says what the
runs read and whether it is here; the README's lists match conf/ and its claims about bad input hold."""

import json
import os
import re
import subprocess
import sys

import pytest

from spafit_exp import CONF_DIR, REPO_ROOT
from spafit_exp.core.errors import ConfigError
from spafit_exp.run.config import GROUPS, check_overrides_compose
from spafit_exp.run.validation import validate
from spafit_exp.sweep import cli as sweep
from tests.conftest import compose
from tests.test_e2e import WATCH

TINY = ["model=tiny_bert", "trainer.max_train_samples=16", "trainer.max_eval_samples=16", "trainer.epochs=1"]


def _cli(args: list[str], cwd, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """The CLI under test_e2e's WATCH: the process and whether the run itself (spafit_exp.run.app) was imported."""
    proc = subprocess.run([sys.executable, "-c", WATCH, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**(os.environ if env is None else env), "HYDRA_FULL_ERROR": "0"})
    watched = [json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("WATCH ")]
    assert len(watched) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, watched[0]


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


# ---------------------------------------------------------------- item 2: `+key` typos


@pytest.mark.parametrize("args,needle", [
    (["+trainer.epoch=1"], "error: trainer.epoch: no such key; did you mean trainer.epochs?"),
    (["+trainer.foo=1"], "error: trainer.foo: no such key; trainer has lr, epochs,"),
    (["+selector.foo=1"], "error: selector.foo: no such key"),  # selector=none: checked in validate, after Hydra
    (["+model.arch.hidden_dropuot_prob=0.2"], "error: model.arch.hidden_dropuot_prob: no such bert config field; "
                                              "did you mean model.arch.hidden_dropout_prob?"),
], ids=lambda a: a[0] if isinstance(a, list) else None)
def test_plus_key_typo_is_one_line_exit_2_nothing_written(tmp_path, args, needle):
    proc, watched = _cli([f"run.root={tmp_path}/out", *TINY, *args], cwd=tmp_path)
    assert _one_error_line(proc).startswith(needle)
    assert watched == {"app": False, "called": []}  # refused before the run is even imported
    assert not [p for p in tmp_path.rglob("*") if p.is_file()] and not (tmp_path / "out" / "default").exists()


@pytest.mark.parametrize("args,message", [
    (["+task.foo=1"], "task.foo: no such key"),
    (["+task.hub.pth=x"], "task.hub.pth: no such key; did you mean task.hub.path?"),
    (["+model.hed=linear"], "model.hed: no such key; did you mean model.head?"),
    (["+data.sorce=hub"], "data.sorce: no such key; did you mean data.source?"),
    (["+run.forse=true"], "run.forse: no such key; did you mean run.force?"),
    (["+decoder.epoch=2"], "decoder.epoch: no such key; did you mean decoder.epochs?"),
    (["+tracking.projekt=x"], "tracking.projekt: no such key; did you mean tracking.project?"),
    (["+lr_grid.value=[1]"], "lr_grid.value: no such key; did you mean lr_grid.values?"),
    (["+study.foo=1"], "study.foo: no such key; study=none has name"),
    (["study=mlm_probe", "+study.runs=x"], "study.runs: no such key; did you mean study.run?"),
    (["+experiment_nam=x"], "experiment_nam: no such key; did you mean experiment_name?"),
], ids=lambda a: a[-1] if isinstance(a, list) else None)
def test_plus_key_in_every_keyed_group_is_refused_with_its_close_match(args, message):
    with pytest.raises(ConfigError) as err:
        check_overrides_compose(args)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_sweep_plan_refuses_a_plus_key_typo_too(capsys):
    assert sweep.main(["plan", "-m", "+trainer.epoch=1", "trainer.lr=1e-3,2e-3"]) == 2
    assert capsys.readouterr().err.strip() == "error: trainer.epoch: no such key; did you mean trainer.epochs?"


def test_selector_none_and_model_arch_keys_are_checked_in_validate():
    with pytest.raises(ConfigError, match=r"^selector\.foo: no such key"):
        validate(compose([*TINY, "trainer.dry_run=true", "+selector.foo=1"]))
    with pytest.raises(ConfigError, match=r"^model\.arch\.hidden_dropuot_prob: no such bert config field"):
        validate(compose([*TINY, "trainer.dry_run=true", "+model.arch.hidden_dropuot_prob=0.2"]))
    validate(compose([*TINY, "trainer.dry_run=true", "+model.arch.hidden_dropout_prob=0.2"]))  # a real field


@pytest.mark.parametrize("group", GROUPS)
def test_every_shipped_option_has_only_known_keys(group):
    """No false refusal: each YAML of conf/ composes through the key check (a key a YAML adds without adding it to
    spafit_exp/run/schema.py fails here)."""
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        if not path.stem.startswith("_"):
            check_overrides_compose([f"{group}={path.stem}"])


# ---------------------------------------------------------------- item 3: tracking=wandb without a login


def _no_wandb_login_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k not in ("NETRC",)}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "NETRC": str(home / "no-netrc"), "WANDB_CONFIG_DIR": str(home / "wandb-config")}


def test_wandb_without_api_key_is_one_line_before_anything_loads(tmp_path):
    proc, watched = _cli([f"run.root={tmp_path}/out", *TINY, "tracking=wandb"], cwd=tmp_path,
                         env=_no_wandb_login_env(tmp_path))
    line = _one_error_line(proc)
    assert line.startswith("error: tracking.mode=online: no W&B API key") and "wandb login" in line
    assert watched == {"app": False, "called": []}  # no model, tokenizer or data loaded
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and "home" not in p.parts]  # no record, no .lock
    assert not (tmp_path / "out" / "default").exists()


# Each case: its environment, the tracking option, and whether the run may start. Cases share one process; wandb's
# settings are rebuilt for each (they are read once per process).
KEY = "k" * 40
LOGIN_CASES = {
    "online, no key": ({}, "wandb", False),
    "WANDB_MODE=offline": ({"WANDB_MODE": "offline"}, "wandb", True),
    "WANDB_MODE=disabled": ({"WANDB_MODE": "disabled"}, "wandb", True),
    "tracking=offline": ({}, "offline", True),
    "WANDB_API_KEY": ({"WANDB_API_KEY": KEY}, "wandb", True),
    "netrc entry": ({"netrc": f"machine api.wandb.ai\n  login user\n  password {KEY}\n"}, "wandb", True),
    "malformed key": ({"WANDB_API_KEY": "short"}, "wandb", False),
    "WANDB_MODE typo": ({"WANDB_MODE": "ofline"}, "offline", False),
}
LOGIN_SCRIPT = """
import json, os, sys
from spafit_exp.run.config import compose
from spafit_exp.core.errors import ConfigError
from spafit_exp.engine.tracking import check_tracking
from spafit_exp.run.spec import resolve
from wandb.sdk import wandb_setup
out = {}
for name, (env, tracking, netrc) in json.loads(sys.argv[1]).items():
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        os.environ.pop(key, None)
    os.environ.update(env)
    if netrc:
        open(os.environ["NETRC"], "w").write(netrc)
    elif os.path.exists(os.environ["NETRC"]):
        os.remove(os.environ["NETRC"])
    wandb_setup._singleton = None
    try:
        check_tracking(resolve(compose(["tracking=" + tracking])).tracking)
        out[name] = "ok"
    except ConfigError as err:
        out[name] = str(err)
print(json.dumps(out))
"""


def test_wandb_login_check_follows_the_environment_without_network(tmp_path):
    env = {**_no_wandb_login_env(tmp_path), "HF_HUB_OFFLINE": "1"}
    cases = {name: ({k: v for k, v in e.items() if k != "netrc"}, tracking, e.get("netrc", ""))
             for name, (e, tracking, _) in LOGIN_CASES.items()}
    proc = subprocess.run([sys.executable, "-c", LOGIN_SCRIPT, json.dumps(cases)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdicts = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (_, _, allowed) in LOGIN_CASES.items():
        assert (verdicts[name] == "ok") == allowed, (name, verdicts[name])
        assert "\n" not in verdicts[name]
    assert verdicts["online, no key"].startswith("tracking.mode=online: no W&B API key")
    assert verdicts["malformed key"].startswith("tracking.mode=online: unusable W&B API key")
    assert verdicts["WANDB_MODE typo"].startswith("WANDB_MODE='ofline': must be one of")


# ---------------------------------------------------------------- item 12: sweep status / --help / plan


def test_status_of_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    assert sweep.main(["status", "nosuch", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: status nosuch: no folder {tmp_path}/nosuch/") and "\n" not in err
    assert not (tmp_path / "nosuch").exists()
    assert sweep.main(["status", "real", "--root", str(tmp_path)]) == 0  # an existing, empty folder: runs=0
    assert "runs=0" in capsys.readouterr().out


def test_help_names_the_other_commands(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "spafit_exp", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for command in ("python -m spafit_exp.sweep plan", "python -m spafit_exp.sweep status", "make tables",
                    "python -m spafit_exp.tables", "python -m spafit_exp.repro", "python -m spafit_exp.export",
                    "python -m spafit_exp.predict", "python -m spafit_exp.lr_search"):
        assert command in proc.stdout, command


def test_plan_names_the_weights_and_data_and_whether_they_are_here(tmp_path, capsys):
    assert sweep.main(["plan", "-m", *TINY, "task=rte,mnli", f"run.root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    needs = out[out.index("\nneeds:\n") + 1:].splitlines()
    assert needs[1] == "  tiny_bert weights: none (random init)"
    assert needs[2] == "  rte: local files present"
    assert needs[3].startswith("  mnli: MISSING ") and "data.source=hub" in needs[3]  # MNLI is not vendored
    assert sweep.main(["plan", "-m", "model=minilm", "task=rte", "trainer.lr=1e-3,2e-3", "model.path=/nowhere/ckpt",
                       f"run.root={tmp_path}"]) == 0
    assert "  minilm weights: /nowhere/ckpt (not found here)" in capsys.readouterr().out.splitlines()
    assert not list(tmp_path.iterdir())  # planning writes nothing


# ---------------------------------------------------------------- item 13: the README says what is true


def _readme_row(group: str) -> str:
    return next(line for line in (REPO_ROOT / "README.md").read_text().splitlines() if line.startswith(f"| `{group}` |"))


@pytest.mark.parametrize("group", ["model", "method", "selector", "lr_grid", "tracking", "launcher", "study",
                                   "experiment"])
def test_readme_and_help_list_every_option_of_a_group(group):
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))
    row = _readme_row(group)
    assert [o for o in options if f"`{o}`" not in row] == []
    help_text = (CONF_DIR / "hydra" / "help" / "spafit.yaml").read_text()
    entry = re.search(rf"^    {group} +(.*?)(?=^    \S|\n\n)", help_text, re.M | re.S).group(1)
    assert [o for o in options if not re.search(rf"\b{o}\b", entry)] == []


def test_readme_run_directory_listing_and_bad_input_claims_hold():
    text = (REPO_ROOT / "README.md").read_text()
    listing = text[text.index("outputs/<experiment>/<task>/<method tag>/<model>/lr=<lr>/seed=<seed>/"):]
    listing = listing[:listing.index("```")]
    for name in ("results.json", "trainable.safetensors", "run.log", ".lock", "resume.pt", "results.replaced-",
                 "wandb/"):
        assert name in listing, name
    with pytest.raises(ConfigError) as err:  # the README quotes the refusal of a `+trainer.*` typo: it must be real
        check_overrides_compose(["+trainer.epoch=1"])
    assert f"`+trainer.epoch=1` is `error: {err.value}`" in text
