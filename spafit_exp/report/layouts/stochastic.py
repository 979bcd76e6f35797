"""Stochastic Tuning paper, Table 1: RoBERTa on six GLUE tasks. MRPC F1 and STS-B Spearman: the convention of
the masked-update papers this table compares against. Means over 7 seeds: each column marks the rows that Welch's
t-test cannot tell from its best (p ≥ 0.05, significance.py)."""

from spafit_exp.report.layouts import Column, Layout, register

register("stoc_table1", Layout(columns=(
    Column("cola", ("mcc",), "CoLA (MCC)"), Column("sst2", ("accuracy",), "SST-2 (Acc)"),
    Column("mrpc", ("f1",), "MRPC (F1)"),
    Column("stsb", ("spearman",), "STS-B (Spearman)"), Column("qnli", ("accuracy",), "QNLI (Acc)"),
    Column("rte", ("accuracy",), "RTE (Acc)"),
), significance=0.05))
