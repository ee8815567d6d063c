import numpy as np
import pytest

from vpr_ros.evaluation.recall import (
    positives_by_distance,
    positives_by_frame,
    rank_database,
    recall_at_n,
)


def test_rank_database_orders_by_cosine_similarity():
    database = np.eye(4, dtype=np.float32)
    query = np.array([[0.1, 0.9, 0.4, 0.0]], np.float32)
    query /= np.linalg.norm(query)
    assert rank_database(query, database, 3).tolist() == [[1, 2, 0]]


def test_positives_by_frame_tolerance_includes_neighbours_and_clips_at_ends():
    positives = positives_by_frame(np.array([0, 5, 9]), np.arange(10), tolerance=1)
    assert [p.tolist() for p in positives] == [[0, 1], [4, 5, 6], [8, 9]]


def test_positives_by_frame_uses_frame_numbers_not_positions():
    database_frames = np.array([30, 10, 20])
    assert positives_by_frame(np.array([21]), database_frames, tolerance=1)[0].tolist() == [2]


def test_positives_by_distance_uses_metres_radius():
    database_xy = np.array([[500000.0, 6000000.0], [500020.0, 6000000.0], [500000.0, 6000030.0]])
    query_xy = np.array([[500001.0, 6000001.0]])
    assert positives_by_distance(query_xy, database_xy, 25.0)[0].tolist() == [0, 1]


def test_recall_at_n_counts_first_true_match():
    ranked = np.array([[3, 0, 1], [2, 1, 0], [4, 4, 4]])
    positives = [np.array([0]), np.array([2]), np.array([1])]
    assert recall_at_n(ranked, positives, (1, 2, 5)) == {
        1: pytest.approx(1 / 3),
        2: pytest.approx(2 / 3),
        5: pytest.approx(2 / 3),
    }


def test_recall_at_n_rejects_mismatched_ground_truth():
    with pytest.raises(ValueError, match="ground-truth"):
        recall_at_n(np.zeros((2, 1), int), [np.array([0])])


def test_recall_end_to_end_on_noisy_copies():
    rng = np.random.default_rng(0)
    database = rng.normal(size=(50, 16)).astype(np.float32)
    query = database + rng.normal(scale=0.05, size=database.shape).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    frames = np.arange(50)
    recall = recall_at_n(
        rank_database(query, database, 5), positives_by_frame(frames, frames, 0), (1,)
    )
    assert recall[1] == 1.0
