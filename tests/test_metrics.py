"""GLUE metric definitions against hand-computed values."""

import math

import numpy as np
import pytest

from spafit_exp.inputs.metrics import compute, logits_to_predictions, token_predictions


def test_accuracy_and_f1():
    pred, gold = np.array([1, 0, 1, 1, 0]), np.array([1, 0, 0, 1, 1])
    # tp=2 fp=1 fn=1 -> precision 2/3, recall 2/3, f1 2/3; 3 of 5 right
    out = compute(["accuracy", "f1"], pred, gold)
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["f1"] == pytest.approx(2 / 3)


def test_matthews():
    pred, gold = np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])
    # tp=1 tn=2 fp=1 fn=0 -> (1*2 - 1*0) / sqrt(2*1*3*2) = 2/sqrt(12)
    assert compute(["mcc"], pred, gold)["mcc"] == pytest.approx(2 / math.sqrt(12))


def test_pearson_spearman():
    pred, gold = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    # pearson: centered x=(-1.5,-.5,.5,1.5), y=(-1.5,.5,-.5,1.5): sum xy = 2.25-.25-.25+2.25=4, sum x^2=sum y^2=5
    out = compute(["pearson", "spearman"], pred, gold)
    assert out["pearson"] == pytest.approx(0.8)
    assert out["spearman"] == pytest.approx(0.8)  # ranks equal the values


def test_predictions():
    logits = np.array([[0.1, 0.9], [2.0, -1.0]])
    assert logits_to_predictions(logits, "classification").tolist() == [1, 0]
    assert logits_to_predictions(np.array([[0.5], [1.5]]), "regression").tolist() == [0.5, 1.5]


def test_entity_f1_ignores_subtokens():
    tags = ["O", "B-PER", "I-PER", "B-LOC"]
    gold = np.array([[-100, 1, 2, -100, 0, 3, -100]])
    pred = np.array([[0, 1, 2, 3, 0, 0, 0]])  # PER right, LOC missed
    p, g = token_predictions(pred, gold, tags)
    assert g == [["B-PER", "I-PER", "O", "B-LOC"]] and p == [["B-PER", "I-PER", "O", "O"]]
    # precision 1/1, recall 1/2 -> f1 2/3
    assert compute(["entity_f1"], p, g)["entity_f1"] == pytest.approx(2 / 3)
