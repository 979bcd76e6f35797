"""Subset paper: Table 1 (selectors x tasks), Table 3 / Figure 2 (subset sizes) and the LoRA rank sweep."""

from spafit_exp.layouts import Column, Layout, register

register("subset_table1", Layout(columns=(
    Column("conll2003", ("entity_f1",), "CoNLL (F1)"), Column("qnli", ("accuracy",), "QNLI"),
    Column("sst2", ("accuracy",), "SST-2"), Column("trec6", ("accuracy",), "TREC-6"),
)))
register("subset_sizes", Layout(ablation=(("task", "selector"), "size")))
register("lora_ranks", Layout(ablation=(("rank",), "task")))
