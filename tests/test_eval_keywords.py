"""Keyword metrics on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from isr.errors import InvalidInput
from isr.eval.keywords import average_precision, mean_average_precision, screen_stats


def test_average_precision_by_hand() -> None:
    # Ranking: pos, neg, pos, neg -> precisions at the positives 1/1 and 2/3.
    s = np.array([0.9, 0.8, 0.7, 0.1])
    y = np.array([True, False, True, False])
    assert average_precision(s, y) == pytest.approx((1 + 2 / 3) / 2)
    # A perfect ranking scores 1, the worst one with 1 positive in 4 scores 1/4.
    assert average_precision(s, np.array([True, True, False, False])) == pytest.approx(1.0)
    assert average_precision(s, np.array([False, False, False, True])) == pytest.approx(0.25)


def test_average_precision_ties_form_one_threshold() -> None:
    # All four tied: one threshold with precision 2/4, whatever the input order.
    s = np.zeros(4)
    assert average_precision(s, np.array([True, True, False, False])) == pytest.approx(0.5)
    assert average_precision(s, np.array([False, False, True, True])) == pytest.approx(0.5)


def test_mean_average_precision_macro_skips_labels_without_positives() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.1, 0.3, 0.6]])
    targets = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]])
    got = mean_average_precision(scores, targets)
    # Label 0: its positive ranks first (AP 1). Label 1: positive item 2 ranks second
    # behind item 1 (AP 1/2). Label 2 has no positive and is left out.
    assert got.labels_scored == 2
    assert got.macro == pytest.approx(0.75)
    # Micro: 9 scores ranked together; positives 0.9 (rank 1) and 0.3 (rank 6): (1 + 2/6) / 2.
    assert got.micro == pytest.approx((1 + 2 / 6) / 2)


def test_mean_average_precision_rejects_bad_input() -> None:
    with pytest.raises(InvalidInput):
        mean_average_precision(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(InvalidInput):
        mean_average_precision(np.zeros((2, 3)), np.zeros((2, 3)))  # no positive at all


def test_screen_stats_by_hand() -> None:
    img = np.array([[0, 1], [2, 3], [1, 4]])  # 3 gallery items, R_I = 2
    txt = np.array([[1], [3], [5]])  # 3 queries, R_T = 1
    truth = np.array([2, 0, 1])
    got = screen_stats(img, txt, truth)
    # Query 0 (label 1) admits items 0 and 2, keeps its truth 2; query 1 (label 3) admits
    # item 1 only, misses its truth 0; query 2 (label 5) admits nothing.
    assert got.kept == pytest.approx(1 / 3)
    assert got.admitted == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert got.n_queries == 3


def test_screen_stats_rejects_bad_input() -> None:
    with pytest.raises(InvalidInput):
        screen_stats(np.array([[0]]), np.array([[0]]), np.array([1]))  # truth outside gallery
    with pytest.raises(InvalidInput):
        screen_stats(np.array([[0]]), np.array([[0], [1]]), np.array([0]))  # counts differ
    with pytest.raises(InvalidInput):
        screen_stats(np.array([[-1]]), np.array([[0]]), np.array([0]))
