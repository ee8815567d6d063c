"""
Search at scale, on small maps.

PCA in the map, index choice, float16 re-score, build-index (atomic).
"""

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from vpr_ros import cli
from vpr_ros.errors import ConfigError, MapModelMismatchError
from vpr_ros.search import faiss_index
from vpr_ros.search.faiss_index import IndexConfig, PlaceIndex
from vpr_ros.maps.mapdir import load_map, read_manifest, rebuild_index, write_map
from vpr_ros.maps.places import Place

DIM = 64
MODEL = {"name": "baseline", "fingerprint": "abc123", "input_size": [32, 64], "dim": DIM,
         "preprocessing": {"resize": [32, 64], "mean": [0, 0, 0], "std": [1, 1, 1]}}


def _clustered(n, dim=DIM, seed=0):
    """
    Places around 20 centres with a falling spectrum, as real descriptors have.

    PCA has structure to find.
    """
    rng = np.random.default_rng(seed)
    spectrum = (np.arange(dim) + 1.0) ** -0.5
    x = (
        rng.standard_normal((20, dim))[rng.integers(20, size=n)] * spectrum
        + 0.5 * rng.standard_normal((n, dim)) * spectrum
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _write(path, n=600, config=IndexConfig("flat", pca_dim=None), seed=0):
    places = [Place(i, i, 10.0 * i, 0.0) for i in range(n)]
    return write_map(
        path,
        _clustered(n, seed=seed),
        places,
        MODEL,
        config,
        [{"bag": "b", "image_topic": "/cam"}],
    )


def _exact_ids(db, q, k):
    return np.argsort(-(q @ db.T), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("whiten", [False, True])
def test_pca_is_recorded_in_the_map_and_projects_queries_as_it_projected_the_map(tmp_path, whiten):
    _write(tmp_path / "m", config=IndexConfig("flat", pca_dim=16, whiten=whiten))
    m = load_map(tmp_path / "m")
    entry = m.manifest.index
    assert entry.dim == 16 and entry.pca.input_dim == DIM and entry.pca.output_dim == 16
    assert entry.pca.whiten is whiten and 0 < entry.pca.explained_variance < 1
    assert "pca.npz" in m.manifest.files  # checksummed like every map file
    # The loaded PCA maps the stored descriptors onto exactly the vectors the index was built from
    # ...
    indexed = m.index.index.reconstruct_n(0, len(m))
    assert np.allclose(m.index.pca.project(m.descriptors), indexed, atol=1e-5)
    # ... and search projects queries the same way: results equal exact search in the projected
    # space.
    queries = _clustered(30, seed=5)
    scores, ids = m.index.search(queries, 5)
    projected = m.index.pca.project(queries)
    assert np.array_equal(ids, _exact_ids(indexed, projected, 5))
    assert np.allclose(scores[:, 0], np.sum(projected * indexed[ids[:, 0]], axis=1), atol=1e-5)
    # a place finds itself
    assert np.array_equal(m.index.search(m.descriptors[:50], 1)[1][:, 0], np.arange(50))
    # any place, scored alike
    assert np.allclose(m.index.similarity(queries[0], ids[0]), scores[0], atol=1e-5)


def test_a_map_with_pca_refuses_a_query_of_another_dim(tmp_path):
    _write(tmp_path / "m", config=IndexConfig("flat", pca_dim=16))
    m = load_map(tmp_path / "m")
    for wrong in (np.ones(16, np.float32), np.ones((1, 128), np.float32)):
        with pytest.raises(
            MapModelMismatchError,
            match="takes 64-D descriptors: query with the model the map was built with",
        ):
            m.index.search(wrong, 5)


def test_pca_needs_more_places_than_dims():
    with pytest.raises(ConfigError, match="needs more than 32 places"):
        PlaceIndex.build(_clustered(20), IndexConfig("flat", pca_dim=32))
    with pytest.raises(ConfigError, match="between 1 and the descriptor dim"):
        PlaceIndex.build(_clustered(200), IndexConfig("flat", pca_dim=DIM))


def test_index_and_pca_are_chosen_by_map_size_and_memory():
    auto = IndexConfig()
    assert auto.resolved(1_000, 512).type == "flat"  # 2 MB of vectors: exact
    assert auto.resolved(100_000, 512).type == "hnsw"  # ~80 MB of 8-bit codes and graph
    # a graph over 6 GB would not fit the memory budget
    assert auto.resolved(200_000, 32_768).type == "ivfpq"
    # a graph's recall falls at this size: compressed lists, re-scored
    big = auto.resolved(1_000_000, 1024)
    assert big.type == "ivfpq" and big.params["nlist"] == 1000 and big.params["m"] == 128
    assert auto.pca_output_dim(100, 5120) is None  # small map: exact search in the model's dims
    assert auto.pca_output_dim(1_000_000, 5120) == faiss_index.PCA_AUTO_DIM
    assert auto.pca_output_dim(1_000_000, 256) is None  # already small descriptors
    assert IndexConfig(pca_dim=None).pca_output_dim(1_000_000, 5120) is None
    with pytest.raises(ConfigError, match="unknown index type"):
        IndexConfig("annoy").resolved(10, 8)
    with pytest.raises(ConfigError, match="has no parameter nprobe"):
        IndexConfig("hnsw", {"nprobe": 4}).resolved(10, 8)


def test_auto_builds_a_compressed_pca_map_when_exact_search_would_be_too_big(
    tmp_path, monkeypatch
):
    # The thresholds scaled down so that a 1500-place map counts as large.
    monkeypatch.setattr(faiss_index, "EXACT_MAX_BYTES", 64 * 1024)
    monkeypatch.setattr(faiss_index, "PCA_AUTO_DIM", 32)
    _write(tmp_path / "m", n=1500, config=IndexConfig())
    m = load_map(tmp_path / "m")
    assert m.manifest.index.type == "hnsw" and m.manifest.index.pca.output_dim == 32
    assert m.index.rescore_vectors.dtype == np.float16 and isinstance(
        m.index.rescore_vectors, np.memmap
    )
    assert (
        np.mean(m.index.search(m.descriptors[::10], 1)[1][:, 0] == np.arange(0, 1500, 10)) >= 0.99
    )


@pytest.mark.parametrize(
    "kind,params",
    [
        ("hnsw", {"rescore": 400, "efSearch": 400}),
        ("ivfpq", {"nlist": 8, "m": 8, "nprobe": 8, "rescore": 400}),
    ],
)
def test_float16_rescore_ranks_like_exact_search(kind, params):
    # A shortlist holding every place: the re-scored ranking must be exact search's, up to the
    # float16 rows' rounding (~1e-3 of a cosine): ranks may swap only between places whose exact
    # scores are that close.
    db, queries = _clustered(400, seed=1), _clustered(40, seed=2)
    index = PlaceIndex.build(db, IndexConfig(kind, params, pca_dim=None))
    scores, ids = index.search(queries, 10)
    exact = _exact_ids(db, queries, 11)
    exact_scores = np.take_along_axis(queries @ db.T, exact, 1)
    assert np.allclose(scores, exact_scores[:, :10], atol=2e-3)
    assert np.allclose(scores, np.take_along_axis(queries @ db.T, ids, 1), atol=2e-3)
    # the same float16 rows
    assert np.allclose(index.similarity(queries[3], ids[3]), scores[3], atol=1e-6)
    # score of rank r-1 minus rank r
    gap_above = -np.diff(exact_scores, axis=1, prepend=np.inf)[:, :10]
    gap_below = -np.diff(exact_scores, axis=1)  # rank r minus rank r+1
    separated = np.minimum(gap_above, gap_below) > 2e-3
    assert separated.mean() > 0.5 and np.array_equal(ids[separated], exact[:, :10][separated])


def test_build_index_rewrites_the_map_atomically_from_its_descriptors(tmp_path, capsys):
    _write(tmp_path / "m", n=800)
    before = read_manifest(tmp_path / "m")
    assert (
        cli.main(
            ["build-index", str(tmp_path / "m"), "--index", "hnsw", "--pca-dim", "24", "--whiten"]
        )
        == 0
    )
    assert "hnsw index over 800 places, PCA 64->24 whitened" in capsys.readouterr().out
    after = read_manifest(tmp_path / "m")
    m = load_map(tmp_path / "m")  # verifies every checksum
    assert after.index.type == "hnsw" and after.index.pca.output_dim == 24
    # Not re-extracted: the same descriptors and places, byte for byte.
    assert after.files["descriptors.npy"] == before.files["descriptors.npy"]
    assert after.files["places.csv"] == before.files["places.csv"]
    assert np.array_equal(m.index.search(m.descriptors[:100], 1)[1][:, 0], np.arange(100))
    assert cli.main(["inspect-map", str(tmp_path / "m")]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # nothing left beside it
    assert (
        cli.main(["build-index", str(tmp_path / "m"), "--pca-dim", "none", "--index", "flat"]) == 0
    )
    assert (
        "pca.npz" not in read_manifest(tmp_path / "m").files
        and not (tmp_path / "m" / "pca.npz").exists()
    )


def _build_index_killed_while_writing(path):
    """build-index whose index write stalls after writing: the parent kills it there (SIGKILL)."""
    save = PlaceIndex.save

    def stalling_save(self, directory):
        names = save(self, directory)
        time.sleep(60)
        return names

    PlaceIndex.save = stalling_save
    rebuild_index(path, IndexConfig("hnsw", pca_dim=16))


def test_a_kill_during_build_index_leaves_the_old_map_intact(tmp_path):
    _write(tmp_path / "m")
    before = read_manifest(tmp_path / "m")
    proc = mp.get_context("spawn").Process(
        target=_build_index_killed_while_writing, args=(tmp_path / "m",)
    )
    proc.start()
    deadline = time.time() + 60
    while (
        not list(tmp_path.glob(".m.partial-*/index.faiss"))
        and time.time() < deadline
        and proc.is_alive()
    ):
        time.sleep(0.05)
    assert list(tmp_path.glob(".m.partial-*/index.faiss")), "build-index never reached the write"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert read_manifest(tmp_path / "m") == before
    # verifies: the old map, whole
    assert load_map(tmp_path / "m").manifest.index.type == "flat"
    # the next rebuild succeeds and clears the debris
    rebuild_index(tmp_path / "m", IndexConfig("hnsw", pca_dim=16))
    assert load_map(tmp_path / "m").manifest.index.type == "hnsw"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
