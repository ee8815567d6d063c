"""Precision-recall metrics on hand-computed cases."""

import numpy as np
import pytest

from vpr_ros.evaluation.precision import (
    at_min_confidence,
    lowest_threshold_for_precision,
    plot_precision_recall,
    precision_recall,
    summary,
)


def test_curve_auc_recall_at_full_precision_and_extended_precision_by_hand():
    # Sorted by confidence: right, right, wrong, right (4 queries, all with a true place).
    curve = precision_recall(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, True]))
    np.testing.assert_allclose(curve.precision, [1, 1, 2 / 3, 3 / 4])
    np.testing.assert_allclose(curve.recall, [0.25, 0.5, 0.5, 0.75])
    assert curve.recall_at_full_precision == 0.5
    assert curve.extended_precision == pytest.approx((1.0 + 0.5) / 2)
    # Trapezoids: 0->0.25 at 1, 0.25->0.5 at 1, 0.5->0.5 (nothing), 0.5->0.75 from 2/3 to 3/4.
    assert curve.auc == pytest.approx(0.25 + 0.25 + 0.25 * (2 / 3 + 3 / 4) / 2)


def test_most_confident_match_wrong_gives_zero_recall_at_full_precision():
    curve = precision_recall(np.array([0.9, 0.5]), np.array([False, True]))
    assert curve.recall_at_full_precision == 0.0
    assert curve.extended_precision == 0.0  # precision at the lowest recall is 0 too


def test_tied_confidences_are_one_point_and_queries_without_a_place_count_only_as_errors():
    curve = precision_recall(
        np.array([0.5, 0.5, 0.2]),
        np.array([True, False, True]),
        has_positive=np.array([True, False, True]),
    )
    np.testing.assert_allclose(curve.thresholds, [0.5, 0.2])
    np.testing.assert_allclose(curve.precision, [0.5, 2 / 3])
    np.testing.assert_allclose(curve.recall, [0.5, 1.0])


def test_operating_point_and_threshold_for_a_precision():
    conf, right = np.array([0.95, 0.9, 0.4, 0.3]), np.array([True, True, False, True])
    point = at_min_confidence(conf, right, 0.5)
    assert (point.precision, point.accepted_fraction) == (1.0, 0.5)
    assert np.isnan(at_min_confidence(conf, right, 0.99).precision)
    assert lowest_threshold_for_precision(precision_recall(conf, right), 0.99) == 0.9
    s = summary(conf, right, 0.5)
    assert s["pose_prior_precision"] == 1.0 and s["pose_prior_fraction"] == 0.5
    assert s["recall_at_100_precision"] == 0.5


def test_bad_input_is_refused_and_plot_is_written(tmp_path):
    with pytest.raises(ValueError, match="equal"):
        precision_recall(np.array([0.1, 0.2]), np.array([True]))
    with pytest.raises(ValueError, match="no query"):
        precision_recall(np.array([0.1]), np.array([False]), has_positive=np.array([False]))
    png = plot_precision_recall(
        {"a": precision_recall(np.array([0.9, 0.1]), np.array([True, False]))}, tmp_path / "pr.png"
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
