""""Parameter-Efficient Fine-Tuning: Is There An Optimal Subset of Parameters to Tune?", Table 1: everything the
reproduction needs, in one place.

Published numbers: copied from Table 1 (§3.2; the text extraction ../shared/papers/002_099fc82fa75dab59.txt has no
page markers or line numbers near it, so its page is not given): roberta-base, subsets of BitFit's size, mean ±
standard deviation over 5 seeds, as fractions with four decimals. CoNLL-2003 entity F1 and TREC-6 accuracy on
their test sets, QNLI and SST-2 accuracy on dev (§3.2)."""

from spafit_exp.repro.claims import Claim
from spafit_exp.repro.recipe import Paper, Published, Row, Scale

TASKS = ("conll2003", "qnli", "sst2", "trec6")  # the table's column order


def _scores(*pairs: tuple[float, float]) -> tuple[dict[str, float], dict[str, float]]:
    return dict(zip(TASKS, (m for m, _ in pairs))), dict(zip(TASKS, (s for _, s in pairs)))


_TABLE = {  # row: ((mean, std) per task in TASKS order, the printed average)
    "Full fine-tuning": (((0.9217, 0.0009), (0.9290, 0.0018), (0.9468, 0.0013), (0.9752, 0.0046)), 0.9432),
    "LoRA (rank 4)": (((0.9139, 0.0018), (0.9165, 0.0021), (0.9406, 0.0031), (0.9708, 0.0041)), 0.9354),
    "Random subset": (((0.9087, 0.0012), (0.9048, 0.0029), (0.9342, 0.0028), (0.9720, 0.0032)), 0.9299),
    "Bitfit": (((0.9080, 0.0014), (0.9039, 0.0018), (0.9383, 0.0026), (0.9592, 0.0059)), 0.9273),
    "Largest pretr. sq-grad": (((0.9073, 0.0016), (0.9037, 0.0028), (0.9378, 0.0052), (0.9552, 0.0061)), 0.9260),
    "Largest downstr. sq-grad": (((0.9073, 0.0020), (0.9075, 0.0010), (0.9399, 0.0031), (0.9580, 0.0049)), 0.9282),
    "Combined gradient stats": (((0.9082, 0.0022), (0.9100, 0.0020), (0.9431, 0.0033), (0.9644, 0.0030)), 0.9314),
    "Pruning with re-training": (((0.9108, 0.0025), (0.9059, 0.0026), (0.9390, 0.0044), (0.9696, 0.0017)), 0.9313),
    "Pruning w/o re-training": (((0.9002, 0.0011), (0.9102, 0.0016), (0.9376, 0.0059), (0.9556, 0.0022)), 0.9259),
}

PUBLISHED = Published(
    source="Subset paper, Table 1 (§3.2; page not recoverable from the text extraction)",
    rows={row: _scores(*pairs)[0] for row, (pairs, _) in _TABLE.items()},
    std={row: _scores(*pairs)[1] for row, (pairs, _) in _TABLE.items()},
    average={row: avg for row, (_, avg) in _TABLE.items()},
    decimals=4,
    note="mean ± std over 5 seeds; subsets sized like BitFit (except full fine-tuning)",
)

FULL_FT = Row("Full fine-tuning", ("method=full_ft", "selector=none"), ("full_ft",))
LORA = Row("LoRA (rank 4)", ("method=lora_r4", "selector=none"), ("peft", "lora"))
PROPER = ("peft", "selector", "proper")  # subset methods that need no initial full fine-tuning
GRADIENT = (*PROPER, "gradstat")


def selectors(pretrain_samples: int | None) -> tuple[Row, ...]:
    """The table's selector rows; WikiText paragraphs for the pre-training statistics capped at small scales."""
    wiki = (f"selector.pretrain_samples={pretrain_samples}",) if pretrain_samples else ()
    return (
        Row("Random subset", ("method=subset", "selector=random"), PROPER),
        Row("Bitfit", ("method=subset", "selector=bitfit"), PROPER),
        Row("Largest pretr. sq-grad", ("method=subset", "selector=pretrain_sqgrad", *wiki), GRADIENT),
        Row("Largest downstr. sq-grad", ("method=subset", "selector=downstream_sqgrad"), GRADIENT),
        Row("Combined gradient stats", ("method=subset", "selector=combined", *wiki), GRADIENT),
        Row("Pruning with re-training", ("method=subset", "selector=diff_pruning"), ("peft", "selector")),
        Row("Pruning w/o re-training", ("method=subset", "selector=diff_pruning_noretrain"), ("peft", "selector"),
            screen=False),  # nothing is retrained: its rate is unused (the pruning fine-tune has its own)
    )


CLAIMS = (
    Claim("U1", "Full fine-tuning outperforms all PEFT methods on all of the tasks", "§3.3.1; §5", "top",
          a="Full fine-tuning", b=("peft",), k=1),
    Claim("U2", "LoRA is always among the top two PEFT methods", "§3.3.1; §5", "top", a="LoRA (rank 4)",
          b=("peft",), k=2),
    Claim("U3", "Different selection-based strategies score similarly (within 1 point on average)", "§3.3.1",
          "similar", b=("selector",), margin=0.01),
    Claim("U4", "A random subset (with a large enough rate) is competitive: within 1 point of the best other "
          "selector on average", "§3.3.1; §5", "better", a="Random subset", b=("best:selector",), margin=-0.01),
    Claim("U5", "Combined gradient statistics outperform the other two gradient statistics", "§3.3.1; §5",
          "better", a="Combined gradient stats", b=("gradstat",)),
    Claim("U6", "On average, combined gradient statistics outperform all proper subset methods (no initial full "
          "fine-tuning)", "§3.3.1; §5", "better", a="Combined gradient stats", b=("proper",)),
)

SCALES = {
    "tiny": Scale(
        "tiny", "tiny_bert", ("trec6",),
        (FULL_FT, selectors(None)[0], Row("Combined gradient stats", ("method=subset", "selector=combined",
                                                                      "selector.stat_samples=8",
                                                                      "selector.pretrain_samples=8"), GRADIENT)),
        seeds=2, rates=2, train_rows=32, eval_rows=32, epochs=1,
        extra=("trainer.max_len=64", "trainer.eval_train_samples=0", "trainer.checkpoint_every=0",
               "decoder.epochs=1"),
        note="tests only: a random 2-layer model, 32 rows; the numbers mean nothing"),
    "cpu": Scale(
        "cpu", "minilm", ("sst2", "conll2003", "trec6"), (FULL_FT, LORA, *selectors(1000)), seeds=3, rates=3,
        extensions=1, train_rows=400, eval_rows=400, epochs=2, extra=("trainer.eval_train_samples=0",),
        note="the embedded 6-layer MiniLM instead of roberta-base; QNLI's training set is not vendored (3 of the 4 "
             "tasks); pre-training statistics over 1,000 WikiText paragraphs instead of 30,508"),
}

PAPER = Paper(
    name="subset",
    title="Parameter-Efficient Fine-Tuning: Is There An Optimal Subset of Parameters to Tune?",
    preset="subset_table1",
    grid=(1, 2, 5),  # Appendix, Figure 4: 1e-4, 2e-4, 5e-4, 1e-3, ... up to 0.1
    published=PUBLISHED,
    claims=CLAIMS,
    scales=SCALES,
    paper_sweeps=(("experiment=subset_table1",),
                  ("experiment=subset_table1", "method=full_ft,lora_r4", "selector=none")),
    paper_rows=(FULL_FT, LORA, *selectors(None)),
    selection="grid search, repeated with a wider range whenever the limit of the range was selected (§3.2)",
)
