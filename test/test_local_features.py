"""
The map's packed local-feature store.

Round trip, checksums, and refusal of missing/damaged/mismatched files.
"""

import hashlib
import json

import numpy as np
import pytest

from vpr_ros.errors import LocalFeaturesMissingError, MapIntegrityError, MapModelMismatchError
from vpr_ros.rerank.base import LocalFeatures
from vpr_ros.fileio import atomic_directory
from vpr_ros.maps.local_features import (
    LOCAL_DIR,
    LocalFeatureStore,
    LocalFeatureWriter,
    copy_first_places,
    stored_reranker,
)

DESCRIPTION = {"reranker": "fol", "dim": 8, "model_fingerprint": "abc123"}


def unit_rows(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write(map_dir, places: list[LocalFeatures], description=DESCRIPTION) -> dict:
    with LocalFeatureWriter(map_dir, description) as writer:
        for features in places:
            writer.append(features)
    return writer.files


@pytest.fixture
def places() -> list[LocalFeatures]:
    rng = np.random.default_rng(0)
    return [LocalFeatures(unit_rows(rng, n)) for n in (5, 0, 12, 1)]


def test_a_map_of_the_first_places_keeps_their_local_features(tmp_path, places) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "first").mkdir()
    write(tmp_path / "full", places)
    files = copy_first_places(tmp_path / "full", 3, tmp_path / "first")
    store = LocalFeatureStore.open(tmp_path / "first", DESCRIPTION, place_count=3)
    for i in range(3):
        np.testing.assert_array_equal(store[i].descriptors,
                                      places[i].descriptors.astype(np.float16))
    names = ("descriptors.bin", "offsets.npy", "meta.json")
    assert set(files) == {f"{LOCAL_DIR}/{n}" for n in names}
    # a map without local features gives a map of its first places without them
    (tmp_path / "plain").mkdir()
    assert copy_first_places(tmp_path / "plain", 2, tmp_path / "first") == {}


def test_round_trip_float_rows_are_fp16_without_padding(tmp_path, places) -> None:
    files = write(tmp_path, places)
    store = LocalFeatureStore.open(tmp_path, DESCRIPTION, place_count=4)
    assert len(store) == 4
    assert store.descriptors.shape == (18, 8) and store.descriptors.dtype == np.float16
    assert isinstance(store.descriptors, np.memmap)
    for i, features in enumerate(places):
        got = store[i]
        assert got.keypoints is None
        np.testing.assert_array_equal(got.descriptors, features.descriptors.astype(np.float16))
    assert store.bytes_per_place == (18 * 8 * 2 + 5 * 8) / 4  # rows + offsets, nothing else
    assert (
        store.meta["rows"] == 18
        and store.meta["dtype"] == "float16"
        and store.meta["reranker"] == "fol"
    )
    assert stored_reranker(tmp_path) == "fol"
    # every file the manifest must protect, with its real sha256, named relative to the map
    # directory
    assert set(files) == {
        f"{LOCAL_DIR}/{n}" for n in ("descriptors.bin", "offsets.npy", "meta.json")
    }
    for name, digest in files.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    with pytest.raises(IndexError, match="outside"):
        store[4]


def test_uint8_rows_and_keypoints_kept_as_given(tmp_path) -> None:
    rng = np.random.default_rng(1)
    places = [
        LocalFeatures(
            rng.integers(0, 256, (n, 8), dtype=np.uint8),
            rng.uniform(0, 640, (n, 2)).astype(np.float32),
        )
        for n in (3, 7)
    ]
    files = write(tmp_path, places)
    assert f"{LOCAL_DIR}/keypoints.bin" in files
    store = LocalFeatureStore.open(tmp_path, DESCRIPTION)
    assert store.descriptors.dtype == np.uint8
    for i, features in enumerate(places):
        np.testing.assert_array_equal(store[i].descriptors, features.descriptors)
        np.testing.assert_array_equal(store[i].keypoints, features.keypoints)


def test_written_inside_an_atomic_map_directory(tmp_path, places) -> None:
    target = tmp_path / "map"
    with atomic_directory(target) as tmp:
        write(tmp, places)
    assert len(LocalFeatureStore.open(target, DESCRIPTION)) == 4
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "broken") as tmp:
        write(tmp, places[:1])
        raise RuntimeError("build failed half way")
    assert not (tmp_path / "broken").exists()


def test_writer_refuses_features_it_cannot_store(tmp_path) -> None:
    rng = np.random.default_rng(2)
    writer = LocalFeatureWriter(tmp_path, DESCRIPTION)
    with pytest.raises(ValueError, match="dim 4"):
        writer.append(LocalFeatures(unit_rows(rng, 3, dim=4)))
    writer.append(LocalFeatures(unit_rows(rng, 3)))
    with pytest.raises(ValueError, match="another kind"):
        writer.append(LocalFeatures(rng.integers(0, 255, (3, 8), dtype=np.uint8)))
    with pytest.raises(ValueError, match="not finite in float16"):
        writer.append(LocalFeatures(np.full((2, 8), 1e6, np.float32)))
    with pytest.raises(ValueError, match="floating point or uint8"):
        writer.append(LocalFeatures(np.ones((2, 8), np.int32)))
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        LocalFeatures(np.ones((3, 8), np.float32), np.ones((2, 2), np.float32))


def test_missing_local_features_say_how_to_rebuild(tmp_path) -> None:
    assert stored_reranker(tmp_path) is None
    with pytest.raises(LocalFeaturesMissingError, match=r"vpr-ros build-map --rerank fol"):
        LocalFeatureStore.open(tmp_path, DESCRIPTION)


@pytest.mark.parametrize(
    "field, value", [("reranker", "geometric"), ("dim", 16), ("model_fingerprint", "other")]
)
def test_features_of_another_reranker_or_model_are_refused(tmp_path, places, field, value) -> None:
    write(tmp_path, places)
    with pytest.raises(MapModelMismatchError, match=f"{field}: map has"):
        LocalFeatureStore.open(tmp_path, {**DESCRIPTION, field: value})


def test_damaged_files_are_refused(tmp_path, places) -> None:
    write(tmp_path, places)
    local = tmp_path / LOCAL_DIR
    with pytest.raises(MapIntegrityError, match="4 places, the map has 5"):
        LocalFeatureStore.open(tmp_path, DESCRIPTION, place_count=5)

    rows = (local / "descriptors.bin").read_bytes()
    (local / "descriptors.bin").write_bytes(rows[:-2])  # truncated copy
    with pytest.raises(MapIntegrityError, match="should hold 288 bytes.*it has 286"):
        LocalFeatureStore.open(tmp_path, DESCRIPTION)
    (local / "descriptors.bin").unlink()
    with pytest.raises(MapIntegrityError, match="it is missing"):
        LocalFeatureStore.open(tmp_path, DESCRIPTION)
    (local / "descriptors.bin").write_bytes(rows)

    offsets = np.load(local / "offsets.npy")
    np.save(local / "offsets.npy", offsets[::-1].copy())
    with pytest.raises(MapIntegrityError, match="not a valid offsets table"):
        LocalFeatureStore.open(tmp_path, DESCRIPTION)
    np.save(local / "offsets.npy", offsets)

    meta = json.loads((local / "meta.json").read_text())
    (local / "meta.json").write_text(json.dumps({**meta, "rows": "many"}))
    with pytest.raises(MapIntegrityError, match="field 'rows'"):
        LocalFeatureStore.open(tmp_path, DESCRIPTION)
    (local / "meta.json").write_text("{not json")
    with pytest.raises(MapIntegrityError, match="not valid JSON"):
        LocalFeatureStore.open(tmp_path, DESCRIPTION)
