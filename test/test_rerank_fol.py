"""
FoL re-ranking against the official test_FoL.py golden vectors.

Also the fp16 map store, and the same-pass local features.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path

from vpr_ros.errors import BackendUnavailableError, LocalFeaturesMissingError
from vpr_ros.imaging import image_files, read_rgb
from vpr_ros.search.faiss_index import IndexConfig
from vpr_ros.rerank.base import LocalFeatures
from vpr_ros.rerank.fol import FolReranker, mutual_matches
from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.inference.torch_backend import TorchExtractor
from vpr_ros.maps.local_features import LocalFeatureStore, LocalFeatureWriter
from vpr_ros.maps.mapdir import write_map
from vpr_ros.maps.places import Place
from vpr_ros.models import registry
from vpr_ros.models.dinov2 import DinoVisionTransformer
from vpr_ros.models.fol import DinoV2WithClsAttention, FoLNet, padded_length

# official layout: every image padded to [3600, 128] float32 (322/504 px)
OFFICIAL_PADDED_BYTES = 3600 * 128 * 4


def tiny_fol() -> FoLNet:
    """
    Build FoL at the preset's 322 px with a tiny DINOv2 (128 wide, 4 blocks), seeded weights.

    Random weights: cheap, same code path.
    """
    torch.manual_seed(0)
    return FoLNet(
        DinoV2WithClsAttention(DinoVisionTransformer(embed_dim=128, depth=4, num_heads=2)),
        num_channels=128,
    ).eval()


@pytest.fixture(scope="module")
def extractor() -> TorchExtractor:
    return TorchExtractor(
        tiny_fol(), registry.spec("fol-b"), fingerprint="tiny-fol-test", device="cpu"
    )


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(shared_path("reference", "fol_rerank.pt"), weights_only=True)


def split(packed: torch.Tensor, lengths: torch.Tensor) -> list[np.ndarray]:
    return [r.numpy() for r in packed.split(lengths.tolist())]


def padded(rows: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros((length, rows.shape[1]), np.float32)
    out[: len(rows)] = rows
    return out


def golden_rerank(
    reranker: FolReranker, golden: dict, i: int, db: list[LocalFeatures], pad: bool = False
):
    query = split(golden["query_local_packed"], golden["query_lengths"])[i]
    candidates = [db[j] for j in golden["predictions"][i].tolist()]
    if pad:  # the official input: zero rows up to pad_len
        query = padded(query, golden["pad_len"])
        candidates = [LocalFeatures(padded(c.descriptors, golden["pad_len"])) for c in candidates]
    global_scores = np.linspace(1.0, 0.5, len(candidates))  # the candidates come in global order
    return reranker.rerank(LocalFeatures(query), candidates, global_scores)


def test_golden_counts_and_order(extractor, golden) -> None:
    reranker = FolReranker(extractor)
    db = [LocalFeatures(r) for r in split(golden["db_local_packed"], golden["db_lengths"])]
    for i in range(2):
        order, counts = golden_rerank(reranker, golden, i, db)
        np.testing.assert_array_equal(counts, golden["match_counts"][i].numpy())
        _, padded_counts = golden_rerank(reranker, golden, i, db, pad=True)
        # the official zero padding changes nothing
        np.testing.assert_array_equal(padded_counts, counts)
        official = golden["rerank_order"][i].numpy()
        assert (np.diff(counts[order]) <= 0).all()
        # Ours keeps the global order inside a tie; the official order differs only inside tie
        # blocks.
        np.testing.assert_array_equal(order, np.argsort(-counts, kind="stable"))
        for count in np.unique(counts):
            block = counts[official] == count
            assert set(order[block]) == set(official[block])
        if i == 0:  # no ties: exactly the official order
            np.testing.assert_array_equal(order, official)
            np.testing.assert_array_equal(
                golden["predictions"][0].numpy()[order], golden["reranked_predictions"][0].numpy()
            )
    # query 1's tie at count 5 (positions 3, 5, 8): official 8, 3, 5 (SIMD sort) or 8, 5, 3; ours
    # 3, 5, 8
    order, _ = golden_rerank(reranker, golden, 1, db)
    assert order[3:6].tolist() == [3, 5, 8]


def test_golden_surviving_pairs(golden) -> None:
    """Every single match equals the reference's independent float64 mutual-NN recomputation."""
    queries = split(golden["query_local_packed"], golden["query_lengths"])
    db = split(golden["db_local_packed"], golden["db_lengths"])
    ours = []
    for i, predictions in enumerate(golden["predictions"].tolist()):
        for k, j in enumerate(predictions):
            q_rows, c_rows = mutual_matches(queries[i], db[j])
            ours += [(i, k, q, c) for q, c in zip(q_rows.tolist(), c_rows.tolist())]
    assert sorted(ours) == sorted(map(tuple, golden["surviving_pairs"].tolist()))


def test_edge_cases_count_every_surviving_pair(extractor, golden) -> None:
    """
    Our choice.

    A single mutual pair counts (official: 0), so edge candidate 1 (one genuine match) scores 1.
    """
    reranker = FolReranker(extractor)
    query = LocalFeatures(golden["edge_query_local"].numpy())
    candidates = [LocalFeatures(c) for c in golden["edge_candidate_local"].numpy()]
    order, counts = reranker.rerank(query, candidates, np.zeros(4))
    # [0, 1, 1, 2]
    np.testing.assert_array_equal(counts, golden["edge_mnn_above_threshold"].numpy())
    official = golden["edge_match_counts"].numpy()  # [0, 0, 1, 2]
    assert (counts != official).tolist() == [False, True, False, False]
    np.testing.assert_array_equal(order, [3, 1, 2, 0])  # the tie 1 == 1 keeps the input order
    # the same without the zero rows (what the store holds)
    unpadded = [LocalFeatures(c.descriptors[np.abs(c.descriptors).sum(1) > 0]) for c in candidates]
    np.testing.assert_array_equal(reranker.rerank(query, unpadded, np.zeros(4))[1], counts)
    # empty query or candidate rows: score 0, no exception
    empty = LocalFeatures(np.zeros((0, 128), np.float32))
    np.testing.assert_array_equal(reranker.rerank(empty, candidates, np.zeros(4))[1], np.zeros(4))
    np.testing.assert_array_equal(
        reranker.rerank(query, [empty, candidates[3]], np.array([0.9, 0.1]))[0], [1, 0]
    )


def test_counts_from_the_fp16_store_equal_fp32(tmp_path, extractor, golden) -> None:
    reranker = FolReranker(extractor)
    db32 = [LocalFeatures(r) for r in split(golden["db_local_packed"], golden["db_lengths"])]
    with LocalFeatureWriter(tmp_path, reranker.describe()) as writer:
        for features in db32:
            writer.append(features)
    store = LocalFeatureStore.open(tmp_path, reranker.describe(), place_count=len(db32))
    assert store.descriptors.dtype == np.float16
    db16 = [store[j] for j in range(len(store))]
    for i in range(2):
        order16, counts16 = golden_rerank(reranker, golden, i, db16)
        order32, counts32 = golden_rerank(reranker, golden, i, db32)
        np.testing.assert_array_equal(counts16, counts32)
        np.testing.assert_array_equal(order16, order32)
    assert store.bytes_per_place == (golden["db_lengths"].sum().item() * 128 * 2 + 15 * 8) / 14


def test_map_without_local_features_is_refused_with_the_rebuild_command(
    tmp_path, extractor
) -> None:
    reranker = FolReranker(extractor)
    descriptors = np.eye(3, extractor.dim, dtype=np.float32)
    map_dir = write_map(
        tmp_path / "map",
        descriptors,
        [Place(i, i) for i in range(3)],
        extractor.describe(),
        IndexConfig(),
        [{"source": "test"}],
    )
    with pytest.raises(
        LocalFeaturesMissingError, match=r"`vpr-ros build-map --rerank fol --out MAP \.\.\.`"
    ):
        LocalFeatureStore.open(map_dir, reranker.describe(), place_count=3)


def test_extractor_without_local_head_is_refused() -> None:
    flat = TorchExtractor(
        torch.nn.Flatten(), registry.spec("fol-b"), fingerprint="no-local-head", device="cpu"
    )
    assert not flat.supports_local_features
    with pytest.raises(BackendUnavailableError, match="backend torch"):
        FolReranker(flat)
    with pytest.raises(BackendUnavailableError, match="gives no local features"):
        flat.extract_with_local([np.zeros((8, 8, 3), np.uint8)])


def test_global_and_local_head_is_the_official_selection() -> None:
    """
    On the official FoL-B head golden.

    Same global descriptor, and the rows are the padded official rows minus padding.
    """
    g = torch.load(shared_path("reference", "fol_b_head.pt"), weights_only=True)
    model = FoLNet(None, num_channels=768)
    model.load_state_dict(g["state_dict"], strict=True)
    model.eval()
    f, t, att = g["input"]["f"], g["input"]["t"], g["input"]["att"]
    out = g["outputs"]
    with torch.no_grad():
        global_descriptor, rows = model.global_and_local_head(f, t, att.clone())
    torch.testing.assert_close(global_descriptor, out["global_descriptor"], atol=1e-5, rtol=1e-4)
    assert [len(r) for r in rows] == out["local_feature_nonzero_rows"].tolist()
    for i, r in enumerate(rows):
        assert r.shape[1] == 128 and len(r) <= padded_length(89) == 3600
        torch.testing.assert_close(r[:64], out["local_feature_first64"][i], atol=1e-5, rtol=1e-4)
    # all rows of image 0 (the one whose full local map is stored), rebuilt independently: the
    # official nearest resize 23 -> 89 takes source pixel floor(d * 23 / 89)
    source = torch.arange(89) * 23 // 89
    pixels = out["selection_mask_23"][0][source][:, source] > 0
    torch.testing.assert_close(rows[0], out["local_all"][0][pixels], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_one_forward_pass_gives_global_and_stored_rows(tmp_path, extractor) -> None:
    """
    Real images at 322 px.

    Extract_with_local == extract (global) and == head's padded rows; bytes per place.
    """
    images = [
        read_rgb(p) for p in image_files(shared_path("data", "gardens_point_sample", "day"))[:3]
    ]
    descriptors, rows = extractor.extract_with_local(images)
    np.testing.assert_allclose(descriptors, extractor.extract(images), atol=1e-6)
    batch = torch.from_numpy(preprocess_batch(images, extractor.spec))
    with torch.no_grad():
        official = extractor.model.local_outputs(batch)
    assert official.local_features.shape[1:] == (3600, 128)
    for i, r in enumerate(rows):
        n = int(official.num_local[i])
        np.testing.assert_array_equal(r, official.local_features[i, :n].numpy())
    reranker = FolReranker(extractor)
    map_descriptors, map_features = reranker.extract_map(images, extractor)
    np.testing.assert_array_equal(map_descriptors, descriptors)
    with LocalFeatureWriter(tmp_path, reranker.describe()) as writer:
        for features in map_features:
            writer.append(features)
    store = LocalFeatureStore.open(tmp_path, reranker.describe())
    mean_rows = np.mean([len(r) for r in rows])
    assert store.bytes_per_place == pytest.approx(mean_rows * 128 * 2 + 8, rel=1e-3)
    assert store.bytes_per_place < OFFICIAL_PADDED_BYTES / 2
    # the query matched against the map: an image matches itself best
    global_scores = map_descriptors @ descriptors[0]
    order, counts = reranker.rerank(
        reranker.query_features(images[0]), [store[j] for j in range(3)], global_scores
    )
    # fp16 copy of itself: every row is its own mutual match
    assert order[0] == 0 and counts[0] == len(rows[0])
