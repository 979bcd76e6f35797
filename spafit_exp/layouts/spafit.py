"""SPAFIT paper, Table 2: BERT-large-cased on nine GLUE tasks, columns as the paper prints them."""

from spafit_exp.layouts import Column, Layout, register

register("spafit_table2", Layout(columns=(
    Column("cola", ("mcc",), "CoLA (MCC)"), Column("sst2", ("accuracy",), "SST-2"),
    Column("mrpc", ("f1", "accuracy"), "MRPC (F1/Acc)"),
    Column("stsb", ("pearson", "spearman"), "STS-B (Pearson/Spearman)"),
    Column("qqp", ("f1", "accuracy"), "QQP (F1/Acc)"), Column("mnli", ("accuracy", "accuracy_mm"), "MNLI (m/mm)"),
    Column("qnli", ("accuracy",), "QNLI"), Column("rte", ("accuracy",), "RTE"), Column("wnli", ("accuracy",), "WNLI"),
)))
