"""SPAFIT paper, Table 2: BERT-large-cased on nine GLUE tasks, one number per task as the paper prints it
(its caption: Matthews correlation for CoLA, F1 for MRPC, Pearson for STS-B, accuracy elsewhere; MNLI matched).
Learning rates and epochs are chosen on each task's main metric (`task.main_metric`: QQP's is F1, so its printed
accuracy is the accuracy at the F1-chosen rate). The paper reports the max over its runs; with one seed per cell
(the preset) the best rate's score is that max."""

from spafit_exp.report.layouts import Column, Layout, register

register("spafit_table2", Layout(columns=(
    Column("cola", ("mcc",), "CoLA (MCC)"), Column("sst2", ("accuracy",), "SST-2 (Acc)"),
    Column("mrpc", ("f1",), "MRPC (F1)"), Column("stsb", ("pearson",), "STS-B (Pearson)"),
    Column("qqp", ("accuracy",), "QQP (Acc)"), Column("mnli", ("accuracy",), "MNLI-m (Acc)"),
    Column("qnli", ("accuracy",), "QNLI (Acc)"), Column("rte", ("accuracy",), "RTE (Acc)"),
    Column("wnli", ("accuracy",), "WNLI (Acc)"),
)))
