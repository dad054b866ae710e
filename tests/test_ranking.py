from __future__ import annotations

import numpy as np
import pytest

from devicefit import ranking


def test_rank_correlations_on_hand_made_examples() -> None:
    truth = [1, 2, 3, 4, 5]
    assert ranking.spearman([10, 20, 30, 40, 50], truth) == pytest.approx(1.0)
    assert ranking.spearman([5, 4, 3, 2, 1], truth) == pytest.approx(-1.0)
    # One swapped adjacent pair: rho = 1 - 6*2/(5*24) = 0.9; tau = (9 - 1)/10 = 0.8.
    assert ranking.spearman([1, 2, 4, 3, 5], truth) == pytest.approx(0.9)
    assert ranking.kendall([1, 2, 4, 3, 5], truth) == pytest.approx(0.8)
    assert ranking.pairwise_accuracy([1, 2, 4, 3, 5], truth) == pytest.approx(0.9)
    assert ranking.pairwise_accuracy([1, 1, 1, 1, 1], truth) == pytest.approx(0.5)


def test_top_fraction_metrics() -> None:
    truth = np.arange(100, dtype=float)
    score = truth.copy()
    score[95:] = -score[95:]  # the true top 5 are ranked last
    assert ranking.top_fraction_overlap(score, truth, 0.1) == pytest.approx(0.5)
    assert ranking.top_k_in_true_fraction(truth, truth, k=64, fraction=0.05) == 5
    assert ranking.top_k_in_true_fraction(score, truth, k=64, fraction=0.05) == 0


def test_within_fraction_uses_the_prediction_as_reference() -> None:
    pred = np.array([100.0, 100.0, 100.0, 100.0])
    truth = np.array([100.0, 109.0, 111.0, 95.0])
    assert ranking.within_fraction(pred, truth, 0.10) == pytest.approx(0.75)
    assert ranking.within_fraction(pred, truth, 0.05) == pytest.approx(0.5)
    assert ranking.mape(pred, truth) == pytest.approx(np.mean([0, 9 / 109, 11 / 111, 5 / 95]))
    report = ranking.regression_report(pred + np.arange(4), truth)
    assert set(report) == {"within_1pct", "within_5pct", "within_10pct", "spearman", "kendall", "mape"}


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        ranking.spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        ranking.spearman([1, np.nan, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        ranking.kendall([1], [1])
    with pytest.raises(ValueError, match="undefined"):
        ranking.mape([1, 2], [0, 2])
