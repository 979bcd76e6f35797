"""Stochastic Tuning ("Stochastic Fine-Tuning of Language Models Using Masked Gradients"), Table 1: everything the
reproduction needs, in one place.

Published numbers: Table 1 (p. 4; the text's anchor `#page-3-0`, pages counted from 0) is an image in the paper;
the text extraction in ../shared/papers/001_767a370b535c08f7.txt keeps only its caption, so its scores are not
transcribed here (None: printed as "not in the extraction"). What the text does state is kept: Stochastic Tuning
updates 0.08% of the parameters (Abstract, p. 1) and improves on BitFit by over two points on average (Abstract;
§3.2, p. 4). Metrics (caption): CoLA Matthews correlation, MRPC F1, STS-B Spearman, accuracy elsewhere; mean and
standard deviation over seven seeds (§3)."""

from spafit_exp.repro.claims import Claim
from spafit_exp.repro.recipe import Paper, Published, Row, Scale

TASKS = ("cola", "sst2", "mrpc", "stsb", "qnli", "rte")

ROWS = (
    Row("Full FT", ("method=full_ft",), ("full_ft",)),
    Row("Frozen", ("method=frozen",), ("peft",)),
    Row("BitFit", ("method=full_bitfit",), ("peft",)),
    Row("Multi-Head", ("method=multi_head",), ("peft",)),
    Row("DPS_Mix", ("method=dps_mix",), ("peft",)),
    Row("Random Tuning", ("method=random_tuning",), ("peft",)),
    Row("Top Tuning", ("method=top_tuning",), ("peft", "ours")),
    Row("Stoc Tuning", ("method=stoc_tuning",), ("peft", "ours")),
)
_BY_KEY = {row.key: row for row in ROWS}

PUBLISHED = Published(
    source="Stochastic Tuning paper, Table 1 (p. 4): scores not in the text extraction",
    rows={row.key: dict.fromkeys(TASKS) for row in ROWS},
    params={"Stoc Tuning": "0.08%"},
    decimals=1,
    note="Table 1 is an image in the paper; ../shared/papers holds only its caption, so no score is transcribed. "
         "The text states: Stoc Tuning updates 0.08% of the parameters (Abstract) and sub-networks are sized like "
         "BitFit's (§3.2)",
)

CLAIMS = (
    Claim("T1", "Stochastic Tuning outperforms full fine-tuning", "§3.2, p. 4", "better", a="Stoc Tuning",
          b=("Full FT",)),
    Claim("T2", "Top Tuning outperforms full fine-tuning", "§3.2, p. 4", "better", a="Top Tuning", b=("Full FT",)),
    Claim("T3", "Stochastic Tuning improves on BitFit by over two points on average", "Abstract, p. 1; §3.2, p. 4",
          "better", a="Stoc Tuning", b=("BitFit",), margin=0.02),
    Claim("T4", "Stochastic Tuning is among the top two on every task", "§3.2, p. 4", "top", a="Stoc Tuning",
          b=("*",), k=2),
    Claim("T5", "Stoc and Top Tuning improve on DPS_Mix and Multi-Head", "§3.2, p. 4", "better", a="ours",
          b=("DPS_Mix", "Multi-Head")),
    Claim("T6", "Stochastic Tuning is more effective than Top Tuning in most tasks", "§3.2, p. 4", "most_tasks",
          a="Stoc Tuning", b=("Top Tuning",)),
)

SCALES = {
    "tiny": Scale(
        "tiny", "tiny_bert", ("rte",), tuple(_BY_KEY[k] for k in ("Full FT", "BitFit", "Stoc Tuning")),
        seeds=2, rates=2, train_rows=32, eval_rows=32, epochs=1,
        extra=("trainer.max_len=64", "trainer.eval_train_samples=0", "trainer.checkpoint_every=0"),
        note="tests only: a random 2-layer model, 32 rows; the numbers mean nothing"),
    "cpu": Scale(
        "cpu", "minilm", ("cola", "sst2", "mrpc"), ROWS, seeds=3, rates=3, train_rows=400, eval_rows=400, epochs=2,
        extra=("trainer.eval_train_samples=0",),
        note="the embedded 6-layer MiniLM (BERT) instead of RoBERTa; QNLI's training set is not vendored"),
}

PAPER = Paper(
    name="stoc",
    title="Stochastic Fine-Tuning of Language Models Using Masked Gradients",
    preset="stoc_table1",
    grid=(1, 3),  # §3.1: {1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3}
    published=PUBLISHED,
    claims=CLAIMS,
    scales=SCALES,
    paper_sweeps=(("experiment=stoc_table1",),),
    paper_rows=ROWS,
    selection="the rate is the only hyperparameter tuned, from its grid (§3.1)",
)
