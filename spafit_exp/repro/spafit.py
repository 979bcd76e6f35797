"""SPAFIT (Stratified Progressive Adaptation Fine-tuning), Table 2: everything the reproduction needs, in one place.

Published numbers: copied from Table 2 of the paper (../shared/papers/000_4154202b85b1038a.txt; page 4 of the
review copy, between its line numbers 382 and 386). Scores are fractions as printed (two decimals): CoLA Matthews
correlation, MRPC F1, STS-B Pearson, accuracy elsewhere; "the best performance achieved by each fine-tuning
method, i.e., max" over its runs (caption); Params in millions (with a 2-way head; docs/spafit.md)."""

from spafit_exp.repro.claims import Claim
from spafit_exp.repro.recipe import Paper, Published, Row, Scale

TASKS = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli")  # the table's column order


def _row(*scores: float) -> dict[str, float]:
    return dict(zip(TASKS, scores))


PUBLISHED = Published(
    source="SPAFIT paper, Table 2 (p. 4 of the review copy)",
    rows={
        "Full Fine-tuning": _row(0.67, 0.87, 0.91, 0.93, 0.89, 0.76, 0.95, 0.9, 0.56),
        "Full BitFit": _row(0.57, 0.82, 0.83, 0.88, 0.89, 0.61, 0.92, 0.87, 0.56),
        "Full LoRA-I": _row(0.64, 0.86, 0.91, 0.92, 0.9, 0.72, 0.93, 0.88, 0.56),
        "Full LoRA-II": _row(0.61, 0.86, 0.92, 0.92, 0.9, 0.71, 0.93, 0.9, 0.56),
        "SPAFIT-8-12-I": _row(0.62, 0.86, 0.92, 0.92, 0.9, 0.73, 0.93, 0.9, 0.56),
        "SPAFIT-8-12-II": _row(0.63, 0.86, 0.92, 0.93, 0.9, 0.74, 0.93, 0.9, 0.56),
        "SPAFIT-8-16-II": _row(0.62, 0.86, 0.91, 0.93, 0.9, 0.73, 0.93, 0.9, 0.56),
        "SPAFIT-4-9-I": _row(0.64, 0.86, 0.92, 0.92, 0.91, 0.74, 0.93, 0.91, 0.56),
        "SPAFIT-4-9-II": _row(0.64, 0.87, 0.92, 0.92, 0.91, 0.76, 0.93, 0.9, 0.56),
        "SPAFIT-4-14-II": _row(0.63, 0.86, 0.92, 0.92, 0.9, 0.73, 0.93, 0.9, 0.56),
    },
    params={"Full Fine-tuning": "333.58M", "Full BitFit": "31.52M", "Full LoRA-I": "9.44M", "Full LoRA-II": "12.59M",
            "SPAFIT-8-12-I": "4.44M", "SPAFIT-8-12-II": "5.88M", "SPAFIT-8-16-II": "3.81M", "SPAFIT-4-9-I": "5.65M",
            "SPAFIT-4-9-II": "7.49M", "SPAFIT-4-14-II": "4.89M"},
    decimals=2,
    note="one run per cell, the max over the paper's four rates (no standard deviations printed)",
)

# The paper's split points N1-N2 on 24 layers, scaled to a 6-layer model as conf/method/spafit.yaml does (layers
# frozen and layers frozen-or-BitFit scaled by 6/24, rounded down): 8→1, 12→2, 16→3, 4→0, 9→1, 14→2.
SIX_LAYERS = {"8-12-I": (1, 2, "I"), "8-12-II": (1, 2, "II"), "8-16-II": (1, 3, "II"), "4-9-I": (0, 1, "I"),
              "4-9-II": (0, 1, "II"), "4-14-II": (0, 2, "II")}


def _spafit(name: str, n1: int, n2: int, kind: str) -> Row:
    return Row(f"SPAFIT-{name}", ("method=spafit", f"method.n1={n1}", f"method.n2={n2}", f"method.lora_type={kind}"),
               ("peft", "spafit"))


FULL_FT = Row("Full Fine-tuning", ("method=full_ft",), ("full_ft",))
BITFIT = Row("Full BitFit", ("method=full_bitfit",), ("peft", "bitfit"))
LORA = (Row("Full LoRA-I", ("method=lora_i",), ("peft", "lora")), Row("Full LoRA-II", ("method=lora_ii",), ("peft", "lora")))

CLAIMS = (
    Claim("S1", "SPAFIT outperforms LoRA while fine-tuning fewer parameters", "Abstract; §5, p. 5", "better",
          a="best:spafit", b=("lora",), fewer_params=True),
    Claim("S2", "SPAFIT outperforms BitFit while fine-tuning fewer parameters", "Abstract; §5, p. 5", "better",
          a="best:spafit", b=("bitfit",), fewer_params=True),
    Claim("S3", "Full BitFit is the worst-performing model", "§5, p. 5", "worst", a="Full BitFit", b=("*",)),
    Claim("S4", "For most tasks a PEFT method performs equal to or better than full fine-tuning (within 1 point)",
          "§5, p. 4", "most_tasks", a="best:peft", b=("Full Fine-tuning",), margin=-0.01),
    Claim("S5", "On CoLA and SST-2 no PEFT method matches full fine-tuning", "§5, p. 5", "top",
          a="Full Fine-tuning", b=("peft",), k=1, tasks=("cola", "sst2")),
)

SCALES = {
    "tiny": Scale(
        "tiny", "tiny_bert", ("rte",),
        (FULL_FT, BITFIT, _spafit("8-12-II", -1, 0, "II")),  # 2 layers: 8-12 scaled to -1-0 (no layer frozen)
        seeds=2, rates=2, train_rows=32, eval_rows=32, epochs=1,
        extra=("trainer.max_len=64", "trainer.eval_train_samples=0", "trainer.checkpoint_every=0"),
        note="tests only: a random 2-layer model, 32 rows; the numbers mean nothing"),
    "cpu": Scale(
        "cpu", "minilm", ("cola", "sst2", "mrpc"),
        (FULL_FT, BITFIT, *LORA, *(_spafit(name, *split) for name, split in SIX_LAYERS.items())),
        seeds=3, rates=3, train_rows=400, eval_rows=400, epochs=2, extra=("trainer.eval_train_samples=0",),
        note="the embedded 6-layer MiniLM; SPAFIT's splits scaled from 24 to 6 layers (row names keep the paper's)"),
}

PAPER = Paper(
    name="spafit",
    title="SPAFIT: Stratified Progressive Adaptation Fine-tuning for Pre-trained Large Language Models",
    preset="spafit_table2",
    grid=(2, 6),  # Appendix A.2: {2e-3, 6e-3, 2e-5, 6e-5}
    published=PUBLISHED,
    claims=CLAIMS,
    scales=SCALES,
    paper_sweeps=(("experiment=spafit_table2",),),
    paper_rows=(FULL_FT, BITFIT, *LORA, *(Row(f"SPAFIT-{name}", (f"method=spafit_{name.lower().replace('-', '_')}",),
                                              ("peft", "spafit")) for name in SIX_LAYERS)),
    selection="the best of its four rates per method and task is reported, the max over its runs (App. A.2)",
)
