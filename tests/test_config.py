"""Every option of every config group composes and validates; bad values fail with one line naming the key."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from spafit_exp import CONF_DIR
from spafit_exp.core.errors import ConfigError
from spafit_exp.run.config import check_group_overrides
from spafit_exp.run.spec import resolve
from spafit_exp.run.validation import validate
from tests.conftest import compose

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml")) if not p.stem.startswith("_")]
# Paper presets that need a 24-layer model, and tasks whose data is not vendored, validate with matching context.
NEEDS_24_LAYERS = {"spafit_8_12_i", "spafit_8_12_ii", "spafit_8_16_ii", "spafit_4_9_i", "spafit_4_9_ii", "spafit_4_14_ii"}
NOT_VENDORED = {"mnli", "qqp", "qnli"}


def test_every_group_has_options():
    for group in ("model", "task", "method", "selector", "lr_grid", "trainer", "tracking", "launcher", "experiment"):
        assert group in GROUPS and list((CONF_DIR / group).glob("*.yaml")), group


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "method" and option in NEEDS_24_LAYERS:
        overrides.append("model=bert_large_cased")
    if group == "task" and option in NOT_VENDORED:
        overrides.append("trainer.dry_run=true")  # data files are checked only for real runs
    if (group, option) == ("method", "subset"):
        overrides.append("selector=random")  # a fixed-subset method needs a selector ...
    if group == "selector" and option != "none":
        overrides.append("method=subset")  # ... and a selector needs a fixed-subset method
    cfg = compose(overrides)
    OmegaConf.resolve(cfg)
    assert cfg.run.dir.startswith("outputs/")
    if cfg.model.name not in ("minilm", "tiny_bert"):
        cfg.trainer.dry_run = True  # paper models load from the hub; their architecture is enough here
    validate(cfg)


def test_default_run_dir_is_deterministic():
    cfg = compose(["task=mrpc", "method=spafit", "trainer.lr=6e-5", "trainer.seed=3"])
    assert cfg.run.dir == "outputs/default/mrpc/spafit-1-2-II/minilm/lr=6e-05/seed=3"


def test_task_batch_size_feeds_trainer_unless_overridden():
    assert compose(["task=qnli"]).trainer.batch_size == 8
    assert compose(["task=rte"]).trainer.batch_size == 16
    assert compose(["task=qnli", "trainer.batch_size=32"]).trainer.batch_size == 32


BAD = [
    (["trainer.lr=-1"], "trainer.lr=-1"),
    (["trainer.lr=0"], "trainer.lr=0"),
    (["trainer.epochs=0"], "trainer.epochs=0"),
    (["trainer.batch_size=0"], "trainer.batch_size=0"),
    (["trainer.grad_accum=0"], "trainer.grad_accum=0"),
    (["trainer.max_len=4"], "trainer.max_len=4"),
    (["trainer.max_len=4096"], "trainer.max_len=4096"),
    (["trainer.warmup_ratio=1.5"], "trainer.warmup_ratio=1.5"),
    (["trainer.precision=fp8"], "trainer.precision=fp8"),
    (["trainer.schedule=cosine"], "trainer.schedule=cosine"),
    (["trainer.max_train_samples=0"], "trainer.max_train_samples=0"),
    (["tracking.mode=loud"], "tracking.mode=loud"),
    (["data.source=ftp"], "data.source=ftp"),
    (["data.dir=/nonexistent/glue"], "data.dir=/nonexistent/glue"),
    (["task=qqp"], "qqp"),
    (["method=spafit", "method.n1=3", "method.n2=3"], "method.n1=3 method.n2=3"),
    (["method=spafit", "method.n2=6"], "method.n2=6"),
    (["method=spafit", "method.n1=-2"], "method.n1=-2"),
    (["method=spafit_8_12_ii"], "method.n1=8 method.n2=12"),
    (["method=lora", "method.lora_type=III"], "method.lora_type=III"),
    (["method=lora", "method.r=0"], "method.r=0"),
    (["method=stoc_tuning", "method.candidates=decoder"], "method.candidates=decoder"),
    (["method=subset", "method.candidates=decoder"], "method.candidates=decoder"),
    (["method=stoc_tuning", "method.k=0"], "method.k=0"),
    (["method=subset", "selector=random", "selector.fraction=1.5"], "selector.fraction=1.5"),
    (["method.name=nope"], "method.name=nope"),
    (["model.path=/nonexistent/ckpt"], "model.path=/nonexistent/ckpt"),
]


@pytest.mark.parametrize("overrides,needle", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_config_one_line_error(overrides, needle):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_unknown_group_option_rejected_before_hydra(tmp_path):
    with pytest.raises(ConfigError, match=r"task=nope: no such task; choose from cola"):
        check_group_overrides(["task=nope"], CONF_DIR)
    with pytest.raises(ConfigError, match=r"method=lorra"):
        check_group_overrides(["-m", "method=full_ft,lorra"], CONF_DIR)
    check_group_overrides(["task=rte,mrpc", "trainer.lr=1e-3", "experiment=null"], CONF_DIR)


def test_spafit_paper_groups_fit_bert_large():
    for preset in NEEDS_24_LAYERS:
        validate(compose([f"method={preset}", "model=bert_large_cased", "trainer.dry_run=true"]))


def test_data_dir_glue_layout(tmp_path: Path):
    """A user's glue_data folder (GLUE download script names, e.g. RTE/) is found through task.folders."""
    import shutil

    (tmp_path / "RTE").mkdir()
    for split in ("train.tsv", "dev.tsv"):
        shutil.copy(CONF_DIR.parent / "data/glue/rte" / split, tmp_path / "RTE" / split)
    validate(compose([f"data.dir={tmp_path}"]))


def test_run_directory_values_need_no_quotes():
    from spafit_exp.run.config import quote_path_values

    argv = ["-m", "study.run=outputs/default/sst2/full_ft/minilm/lr=5e-05/seed=1", "trainer.lr=1e-3,2e-3",
            "study.run='already/lr=1'"]
    assert quote_path_values(argv) == ["-m", "study.run='outputs/default/sst2/full_ft/minilm/lr=5e-05/seed=1'",
                                       "trainer.lr=1e-3,2e-3", "study.run='already/lr=1'"]
    cfg = compose(["study=mlm_probe", "study.run=outputs/x/lr=5e-05/seed=1"])
    assert cfg.study.run == "outputs/x/lr=5e-05/seed=1"


@pytest.mark.parametrize("override,needle", [
    ("trainer.epochs=three", "could not be converted to Integer"),
    ("trainer.lrr=1e-3", "Key 'lrr' not in 'TrainerConfig'"),
    ("data.num_workers=x", "could not be converted to Integer"),
    ("trainer.dry_run=maybe", "trainer.dry_run=maybe"),
])
def test_typed_schema_rejects_at_compose(override, needle):
    """The trainer and data schema (spafit_exp/run/schema.py): wrong types and misspelt keys fail while composing,
    as one line naming the override."""
    from spafit_exp.run.config import check_overrides_compose

    with pytest.raises(ConfigError) as err:
        check_overrides_compose([override])
    message = str(err.value)
    assert needle in message and override.split("=")[0] in message and "\n" not in message


METHODS = [p.stem for p in sorted((CONF_DIR / "method").glob("*.yaml"))]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_dry_runs_on_the_meta_device(method, capsys):
    """trainer.dry_run=true builds the architecture on the meta device: every method must get through it."""
    from spafit_exp.run.app import dry_run

    # SPAFIT's groups need more layers than tiny_bert's two: the 6-layer embedded model, or a 24-layer preset's
    model = "bert_large_cased" if method in NEEDS_24_LAYERS else "minilm" if method == "spafit" else "tiny_bert"
    overrides = [f"method={method}", f"model={model}", "trainer.dry_run=true"]
    if method == "subset":
        overrides.append("selector=random")
    dry_run(resolve(compose(overrides)))
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("trainable_params=")


def test_subset_paper_lora_is_query_value():
    """The subset paper's LoRA fractions (0.03 ... 1.89% for r = 1 ... 64 on RoBERTa-base) are query + value:
    r = 4 is 147,456 LoRA parameters + 592,130 in the classification head."""
    from spafit_exp.run.app import prepare

    prepared = prepare(resolve(compose(["model=roberta_base", "method=lora_r4", "task=sst2", "trainer.dry_run=true"])),
                       device="meta")
    trainable = sum(p.numel() for p in prepared.model.parameters() if p.requires_grad)
    assert trainable == 739586
