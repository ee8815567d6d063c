"""Calibrated confidence: ratio margin, logistic fit, defaults."""

import numpy as np
import pytest

from vpr_ros.confidence import (
    DEFAULT_MODELS,
    FEATURES_TEMPORAL,
    ConfidenceModel,
    fit_confidence,
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
