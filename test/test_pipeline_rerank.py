"""
Re-ranking through the whole pipeline.

Build-map stores local features, the localizer re-sorts with them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rosutil import perturb, place_images
from test_rerank_fol import tiny_fol
from vpr_ros.errors import LocalFeaturesMissingError
from vpr_ros.search.faiss_index import IndexConfig
from vpr_ros.rerank import create_reranker
from vpr_ros.inference.torch_backend import TorchExtractor
from vpr_ros.localizer import Localizer, LocalizerConfig
from vpr_ros.maps.build import build_map
from vpr_ros.maps.mapdir import load_map, rebuild_index
from vpr_ros.maps.sources import Frame
from vpr_ros.models import registry


class ListSource(list):
    """Frames with positions along a straight street, as a bag source yields them."""

    def describe(self) -> list[dict]:
        return [{"source": "test images"}]


def frames(images) -> ListSource:
    return ListSource(
        Frame(
            index=i,
            stamp_ns=(i + 1) * 10**9,
            image=img,
            position=np.array([10.0 * i, 0.0, 0.0]),
            orientation=None,
            latlon=None,
            utm_zone=None,
            source="test",
            topic="/camera",
        )
        for i, img in enumerate(images)
    )


@pytest.fixture(scope="module")
def extractor() -> TorchExtractor:
    return TorchExtractor(
        tiny_fol(), registry.spec("fol-b"), fingerprint="tiny-fol-pipeline", device="cpu"
    )


@pytest.fixture(scope="module")
def images():
    return place_images(6, seed=11)


@pytest.fixture(scope="module")
def fol_map(tmp_path_factory, extractor, images):
    out = tmp_path_factory.mktemp("fol") / "map"
    return build_map(
        frames(images),
        extractor,
        out,
        IndexConfig("flat"),
        batch_size=4,
        reranker=create_reranker("fol", extractor),
    )


def test_map_holds_verified_local_features_and_rerank_fills_rerank_score(
    fol_map, extractor, images
):
    vpr_map = load_map(fol_map, extractor.describe())
    # protected by the manifest
    assert any(name.startswith("local/") for name in vpr_map.manifest.files)
    localizer = Localizer(
        vpr_map,
        extractor,
        LocalizerConfig(top_k=3, rerank="auto", rerank_top_k=4, temporal="none"),
    )
    assert localizer.reranker is not None and localizer.reranker.name == "fol"
    m = localizer.localize(perturb(images[2], 5))
    assert m.rerank == "fol" and m.latency_ms.rerank is not None
    scores = [c.rerank_score for c in m.candidates]
    # FoL: counts of mutual matches
    assert all(s is not None and s >= 0 and float(s).is_integer() for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert m.best.place_id == 2


def test_rebuilding_the_index_keeps_the_local_features(fol_map, extractor):
    rebuild_index(fol_map, IndexConfig("hnsw"))
    vpr_map = load_map(fol_map, extractor.describe())
    assert vpr_map.manifest.index.type == "hnsw"
    assert (
        Localizer(vpr_map, extractor, LocalizerConfig(rerank="fol", temporal="none")).local_store
        is not None
    )


def test_fol_on_a_map_without_local_features_is_refused_with_the_rebuild_command(
    tmp_path, extractor, images
):
    plain = build_map(frames(images), extractor, tmp_path / "plain", IndexConfig("flat"))
    vpr_map = load_map(plain, extractor.describe())
    with pytest.raises(LocalFeaturesMissingError, match="vpr-ros build-map --rerank fol"):
        Localizer(vpr_map, extractor, LocalizerConfig(rerank="fol"))
    # auto falls back to no re-ranking on such a map
    assert Localizer(vpr_map, extractor, LocalizerConfig(rerank="auto")).reranker is None
    assert math.isfinite(
        Localizer(vpr_map, extractor, LocalizerConfig(rerank="auto", temporal="none"))
        .localize(images[0])
        .confidence
    )
    assert np.isfinite(vpr_map.descriptors).all()


def test_a_frame_too_small_for_local_features_is_judged_without_the_inlier_feature(tmp_path):
    """
    0 inliers on a frame that holds no local features says nothing about the answer.

    (Nordland's 64x32 frames: the shipped re-ranking model would take them as unverified and give
    no prior at all; the filter's model judges them.)
    """
    import cv2

    from vpr_ros.confidence import FEATURES_TEMPORAL, FEATURES_TEMPORAL_RERANK
    from vpr_ros.inference.factory import create_extractor

    baseline = create_extractor("baseline", backend="torch")
    route = place_images(30, seed=5)
    path = build_map(frames(route), baseline, tmp_path / "map", IndexConfig("flat"),
                     reranker=create_reranker("xfeat", baseline))
    localizer = Localizer(load_map(path, baseline.describe()), baseline,
                          LocalizerConfig(rerank="auto", temporal="hmm"))
    features = [localizer.localize(perturb(route[i], i)).confidence_features for i in range(20)]
    assert tuple(features[-1]) == FEATURES_TEMPORAL_RERANK, "the filter answers by now"
    tiny = cv2.resize(perturb(route[20], 20), (64, 32), interpolation=cv2.INTER_AREA)
    m = localizer.localize(tiny)
    assert m.temporal.applied and tuple(m.confidence_features) == FEATURES_TEMPORAL
