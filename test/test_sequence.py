import numpy as np
import pytest

from vpr_ros.temporal.seqslam import (
    SequenceConfig,
    SequenceMatcher,
    enhance_contrast,
    filter_sequence,
)


def noisy_diagonal(
    num_queries: int, database_size: int, start: int, velocity: float, noise: float, seed: int = 0
) -> np.ndarray:
    """Similarity matrix: true place of query q is start + velocity * q, buried in noise."""
    rng = np.random.default_rng(seed)
    similarity = rng.normal(scale=noise, size=(num_queries, database_size)).astype(np.float32)
    truth = np.rint(start + velocity * np.arange(num_queries)).astype(int)
    similarity[np.arange(num_queries), truth] += 1.0
    return similarity, truth


def test_sequence_filter_recovers_diagonal_that_single_frames_miss():
    similarity, truth = noisy_diagonal(60, 400, start=100, velocity=1.0, noise=0.6)
    single = similarity.argmax(axis=1)
    filtered, scores = filter_sequence(similarity, SequenceConfig(length=10))
    assert filtered.shape == scores.shape == (60, 1)
    # After the first frames the path is long enough to win.
    assert np.mean(single[10:] == truth[10:]) < 0.5
    assert np.mean(filtered[10:, 0] == truth[10:]) >= 0.9


def test_sequence_filter_follows_a_slower_robot():
    similarity, truth = noisy_diagonal(60, 400, start=50, velocity=0.5, noise=0.4)
    slow = SequenceConfig(length=10, min_velocity=0.4, max_velocity=0.6, num_velocities=3)
    filtered, _ = filter_sequence(similarity, slow)
    # Half-place velocities land between places: count a neighbour as right.
    slow_hits = np.mean(np.abs(filtered[10:, 0] - truth[10:]) <= 1)
    assert slow_hits >= 0.9
    # The default velocity range cannot follow it as well.
    default, _ = filter_sequence(similarity, SequenceConfig(length=10))
    assert np.mean(np.abs(default[10:, 0] - truth[10:]) <= 1) < slow_hits


def test_online_push_equals_offline_filter_and_returns_top_k_sorted():
    similarity, _ = noisy_diagonal(25, 80, start=5, velocity=1.0, noise=0.3)
    config = SequenceConfig(length=5, contrast_window=8)
    offline, offline_scores = filter_sequence(similarity, config, k=3)
    matcher = SequenceMatcher(80, config)
    for q, row in enumerate(similarity):
        indices, scores = matcher.push(row, k=3)
        assert indices.tolist() == offline[q].tolist()
        np.testing.assert_allclose(scores, offline_scores[q])
        assert np.all(np.diff(scores) <= 0)


def test_length_one_is_plain_argmax():
    similarity, _ = noisy_diagonal(20, 50, start=0, velocity=1.0, noise=0.8)
    filtered, scores = filter_sequence(
        similarity, SequenceConfig(length=1, num_velocities=1, contrast_window=0)
    )
    assert filtered[:, 0].tolist() == similarity.argmax(axis=1).tolist()
    np.testing.assert_allclose(scores[:, 0], similarity.max(axis=1))


def test_path_score_is_mean_similarity_along_the_line():
    similarity = np.zeros((3, 10), np.float32)
    similarity[0, 2], similarity[1, 3], similarity[2, 4] = 0.3, 0.6, 0.9
    config = SequenceConfig(
        length=3, min_velocity=1.0, max_velocity=1.0, num_velocities=1, contrast_window=0
    )
    filtered, scores = filter_sequence(similarity, config)
    assert filtered[2, 0] == 4
    assert scores[2, 0] == pytest.approx(0.6)


def test_reset_forgets_history():
    matcher = SequenceMatcher(
        10,
        SequenceConfig(
            length=3, min_velocity=1.0, max_velocity=1.0, num_velocities=1, contrast_window=0
        ),
    )
    matcher.push(np.eye(10, dtype=np.float32)[2])
    matcher.push(np.eye(10, dtype=np.float32)[3])
    matcher.reset()
    indices, scores = matcher.push(np.eye(10, dtype=np.float32)[7])
    assert indices.tolist() == [7] and scores.tolist() == [1.0]


def test_enhance_contrast_standardises_against_neighbours():
    row = np.array([1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0], np.float32)
    enhanced = enhance_contrast(row, window=3)
    assert enhanced.argmax() == 3
    assert enhanced[3] > 1.5 and abs(enhanced[0]) < enhanced[3]


def test_rejects_wrong_row_size_and_bad_config():
    with pytest.raises(ValueError, match="expected"):
        SequenceMatcher(10).push(np.zeros(9, np.float32))
    with pytest.raises(ValueError, match="length"):
        SequenceConfig(length=0)
