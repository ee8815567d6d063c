"""Pose priors a robot can act on: none off the map or from a lost track; held-out calibration."""

from pathlib import Path

import numpy as np
import pytest

from vpr_ros.evaluation.calibration import expected_calibration_error
from vpr_ros.evaluation.conditions import Condition, conditions, prefix_map, replay, score
from vpr_ros.evaluation.recall import positives_by_frame
from vpr_ros.localizer import RETRIEVAL_STANDS_OUT, Localizer, LocalizerConfig
from vpr_ros.maps.mapdir import load_map, write_map
from vpr_ros.maps.places import Place
from vpr_ros.search.faiss_index import IndexConfig
from vpr_ros.on_map import fit_on_map, peak

DIM = 64
MODEL = {"name": "baseline", "fingerprint": "synthetic", "input_size": [32, 64], "dim": DIM,
         "preprocessing": {"resize": [32, 64], "mean": [0, 0, 0], "std": [1, 1, 1]}}


def _route(n: int, seed: int, noise: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """
    Map and query descriptors of one route: neighbouring places alike, every place its own.

    Queries are the places seen again with noise (another day).
    """
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(n, DIM)), axis=0) * 0.35 + rng.normal(size=(n, DIM))
    places = walk / np.linalg.norm(walk, axis=1, keepdims=True)
    queries = places + noise * rng.normal(size=(n, DIM)) / np.sqrt(DIM)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return places.astype(np.float32), queries.astype(np.float32)


def _map(tmp: Path, descriptors: np.ndarray):
    places = [Place(i, i) for i in range(len(descriptors))]  # an image folder: no positions
    path = write_map(tmp / "map", descriptors, places, MODEL,
                     IndexConfig("flat", pca_dim=None), [{"source": "test"}])
    return load_map(path)


def _replay(localizer, order, queries, n):
    truth = positives_by_frame(np.arange(len(queries)), np.arange(n), 1)
    far = positives_by_frame(np.arange(len(queries)), np.arange(n), 3)
    c = Condition("test", np.asarray(order))
    return c, replay(localizer, c, queries, truth, far)


def test_every_map_stores_its_null_similarity(tmp_path):
    places, _ = _route(120, seed=0)
    m = _map(tmp_path, places)
    q = np.asarray(m.null_similarity.quantiles)
    assert len(q) >= 3 and np.all(np.diff(q) >= 0)
    assert list(m.manifest.null_similarity) == m.null_similarity.to_manifest()


def test_no_pose_prior_past_the_end_of_a_half_map(tmp_path):
    places, queries = _route(300, seed=1)
    full = _map(tmp_path, places)
    half = prefix_map(full, 150, tmp_path)
    c, frames = _replay(Localizer(half, None, LocalizerConfig()), np.arange(300), queries, 300)
    row = score(c, frames)
    assert frames.far.sum() > 100
    assert frames.prior[~frames.far].any(), "the mapped half gets priors"
    assert row.off_map_prior_rate == 0.0, np.nonzero(frames.prior & frames.far)[0]
    # the on-map probability falls off the map and stays low there
    assert np.median(frames.on_map_probability[frames.far]) < 0.5 < np.median(
        frames.on_map_probability[~frames.far & frames.on_map])


def _jump(tmp_path):
    places, queries = _route(400, seed=2)
    localizer = Localizer(_map(tmp_path, places), None, LocalizerConfig())
    order = np.r_[np.arange(40, 100), np.arange(300, 360)]  # carried from place 99 to place 300
    return _replay(localizer, order, queries, 400)


def test_a_jump_gives_at_most_one_wrong_prior(tmp_path):
    c, frames = _jump(tmp_path)
    assert c.jumps == [60]
    assert frames.prior[:60].mean() > 0.5
    wrong = frames.prior[60:] & ~frames.right[60:]
    assert wrong.sum() <= 1, np.nonzero(wrong)[0]


def test_on_the_frame_after_a_jump_a_retrieval_that_stands_out_answers(tmp_path):
    """The trusted track continues where the robot was; the retrieval, distinct, is right."""
    places, queries = _route(400, seed=2, noise=0.4)  # distinct places: wide ratio margins
    localizer = Localizer(_map(tmp_path, places), None, LocalizerConfig())
    c, frames = _replay(localizer, np.r_[np.arange(40, 100), np.arange(300, 360)], queries, 400)
    assert c.jumps == [60] and frames.prior[58:60].all(), "a trusted track before the jump"
    assert frames.confidence_features[60]["margin"] > RETRIEVAL_STANDS_OUT
    assert frames.plain_right[60] and frames.right[60]


@pytest.mark.xfail(strict=True, reason=(
    "not met yet: the fresh track takes over 7 frames after the jump, but the on-map probability,"
    " which fell while the answers were the retrieval's, needs until 15 frames after it to come"
    " back above the confidence threshold"))
def test_right_priors_return_within_ten_frames_of_a_jump(tmp_path):
    c, frames = _jump(tmp_path)
    recovered = score(c, frames).frames_to_recover[0]
    assert recovered is not None and recovered <= 10


def test_shuffled_chunks_are_not_worse_than_the_plain_retrieval(tmp_path):
    places, queries = _route(400, seed=3, noise=1.3)
    localizer = Localizer(_map(tmp_path, places), None, LocalizerConfig())
    chunks = next(c for c in conditions(400, 400) if c.name == "chunks of 25, shuffled")
    _, frames = _replay(localizer, chunks.order, queries, 400)
    assert frames.right.mean() >= frames.plain_right.mean()
    assert (frames.right[frames.prior]).mean() >= 0.99


def test_on_map_probability_fitted_on_one_route_is_calibrated_on_another(tmp_path):
    """
    The published on-map probability (the filter over frames), its model fitted on another route.

    A single frame's evidence does not transfer as well (its novelty shifts from route to route:
    fitted on route 10 the frame model's ECE on route 11 is 0.19); the filter's, which a robot
    acts on, does.
    """
    def half_route(seed):
        places, queries = _route(300, seed)
        return _map(tmp_path / str(seed), places[:150]), queries

    fit_map, fit_queries = half_route(10)
    scores, _ = fit_map.index.search(fit_queries, 10)
    i = np.arange(300)
    model = fit_on_map([{
        "novelty": np.array([fit_map.null_similarity.novelty(float(s)) for s in scores[:, 0]]),
        "peak": np.array([peak(s) for s in scores]), "on": i < 151, "far": i > 153}])
    held_map, held_queries = half_route(11)
    _, frames = _replay(Localizer(held_map, None, LocalizerConfig(), on_map_model=model),
                        np.arange(300), held_queries, 300)
    used = frames.on_map | frames.far
    p_on, on = frames.on_map_probability[used], frames.on_map[used]
    assert expected_calibration_error(p_on, on) < 0.1
    assert p_on[on].mean() > 0.8 > 0.2 > p_on[~on].mean()
