"""Calibrated confidence: ratio margin, logistic fit, defaults."""

import numpy as np
import pytest

from vpr_ros.confidence import (
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_MODELS,
    FEATURES_PLAIN,
    FEATURES_TEMPORAL,
    FEATURES_TEMPORAL_RERANK,
    ConfidenceModel,
    default_model,
    fit_confidence,
    frame_features,
    ratio_margin,
)


def test_ratio_margin_uses_the_first_candidate_elsewhere():
    scores = np.array([0.9, 0.85, 0.5])
    d = np.sqrt(2 - 2 * scores)
    assert ratio_margin(scores, np.array([False, False, True])) == pytest.approx(1 - d[0] / d[2])
    assert ratio_margin(scores, np.array([False, True, True])) == pytest.approx(1 - d[0] / d[1])
    # none elsewhere: the last
    assert ratio_margin(scores, np.zeros(3, bool)) == pytest.approx(1 - d[0] / d[2])
    assert ratio_margin(scores[:1], np.zeros(1, bool)) == 0.0


def test_fit_recovers_a_known_logistic_model_and_is_calibrated():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(20000, 2))
    p = 1 / (1 + np.exp(-(4 * x[:, 0] - 2 * x[:, 1] - 1)))
    y = rng.uniform(size=len(p)) < p
    model = fit_confidence(
        {"margin": x[:, 0], "support": x[:, 1]}, y, ("margin", "support"), l2=0.0
    )
    np.testing.assert_allclose(model.weights, (4, -2), atol=0.2)
    assert model.bias == pytest.approx(-1, abs=0.15)
    conf = model.batch({"margin": x[:, 0], "support": x[:, 1]})
    high = conf > 0.8
    # calibrated where it matters
    assert y[high].mean() == pytest.approx(conf[high].mean(), abs=0.03)


def test_model_call_matches_batch_and_names_missing_features():
    model = DEFAULT_MODELS[FEATURES_TEMPORAL]
    one = model(margin=0.2, support=0.9)
    batch = model.batch({"margin": np.array([0.2]), "support": np.array([0.9])})
    assert one == pytest.approx(batch[0]) and 0 < one < 1
    assert model(margin=0.2, support=0.95) > model(margin=0.2, support=0.3)
    with pytest.raises(ValueError, match="support"):
        model(margin=0.2)
    with pytest.raises(ValueError, match="both right and wrong"):
        fit_confidence({"margin": np.ones(5)}, np.ones(5, bool), ("margin",))
    with pytest.raises(ValueError):
        ConfidenceModel(("margin",), (1.0, 2.0), 0.0)


def test_rerank_feature_counts_the_best_places_inliers_in_hundreds_with_the_filters_answer_only():
    scores, ids = np.array([0.9, 0.8, 0.5]), np.array([4, 20, 40])

    class Track:
        support = 0.9

    # without the filter's answer the re-ranker's score does not enter (verified near misses)
    alone = frame_features(scores, ids, None, rerank_score=60.0)
    assert tuple(alone) == FEATURES_PLAIN
    assert default_model(alone) is DEFAULT_MODELS[FEATURES_PLAIN]
    verified = frame_features(scores, ids, None, Track(), rerank_score=60.0)
    assert tuple(verified) == FEATURES_TEMPORAL_RERANK
    assert verified["rerank"] == pytest.approx(0.6)
    assert default_model(verified) is DEFAULT_MODELS[FEATURES_TEMPORAL_RERANK]
    # not among the re-ranked candidates (NaN) or unverified: 0
    for score in (float("nan"), 0.0):
        assert frame_features(scores, ids, None, Track(), rerank_score=score)["rerank"] == 0.0
    assert tuple(frame_features(scores, ids, None, Track())) == FEATURES_TEMPORAL
    with pytest.raises(ValueError, match="no default confidence model"):
        default_model({"margin": 0.1, "rerank": 1.0})


def test_rerank_model_trusts_verified_answers_more_and_look_alikes_not_enough_to_act():
    model = DEFAULT_MODELS[FEATURES_TEMPORAL_RERANK]
    values = [model(margin=0.0, support=0.2, rerank=n / 100) for n in (0, 15, 60, 200)]
    assert values == sorted(values) and values[-1] > values[0] + 0.2
    # On the fitting world's filtered frames, right answers verify with 160+ inliers (10th
    # percentile) and look-alikes off the map with 40-90: only the first are acted on.
    assert model(margin=0.05, support=0.6, rerank=1.6) >= DEFAULT_MIN_CONFIDENCE
    assert model(margin=0.05, support=0.6, rerank=0.6) < DEFAULT_MIN_CONFIDENCE
