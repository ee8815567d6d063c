"""
`vpr-ros build-map --append`: a map grown by new bags.

The grown map equals a map built from all bags at once, keeps its model, PCA and index
settings, and survives a failed append unchanged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vpr_ros.cli import main
from vpr_harness.demo.route import CAMERA_TOPIC, GPS_TOPIC, write_demo_bags
from vpr_ros.errors import BagError
from vpr_ros.fileio import PARTIAL, file_sha256
from vpr_ros.inference.factory import create_extractor
from vpr_ros.maps.append import append_to_map
from vpr_ros.maps.build import in_process
from vpr_ros.maps.local_features import LocalFeatureStore
from vpr_ros.maps.mapdir import MANIFEST, load_map
from vpr_ros.maps.sources import BagSource

MODEL = "raw-pixels"  # a real extractor that costs nothing: the map logic is under test


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> tuple[Path, Path]:
    """Two drives of the demo route (30 and 26 frames), a month apart."""
    return write_demo_bags(tmp_path_factory.mktemp("bags"), frames=30)


def _build(*args: str) -> int:
    return main(
        ["build-map", "--image-topic", CAMERA_TOPIC, "--pose-topic", GPS_TOPIC, *map(str, args)]
    )


def _snapshot(map_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(map_dir)): file_sha256(p) for p in map_dir.rglob("*") if p.is_file()
    }


def test_append_gives_the_map_built_from_both_bags(bags, tmp_path):
    first, second = bags
    grown, whole = tmp_path / "grown", tmp_path / "whole"
    assert _build("--bag", first, "--model", MODEL, "--out", grown) == 0
    before = load_map(grown)
    old_descriptors = np.array(before.descriptors)
    # the model is the map's when --model is left out
    assert _build("--append", "--bag", second, "--out", grown) == 0
    assert _build("--bag", first, "--bag", second, "--model", MODEL, "--out", whole) == 0

    a, b = load_map(grown), load_map(whole)  # both verify (checksums, counts, index)
    assert len(a) == len(b) == len(before) + 26
    np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-6)
    np.testing.assert_array_equal(a.descriptors[: len(before)], old_descriptors)
    assert list(a.places) == list(b.places)
    assert [p.place_id for p in a.places] == list(range(len(a)))
    assert a.manifest.sources == b.manifest.sources
    assert [s["source"] for s in a.manifest.sources] == [str(first), str(second)]
    assert a.model == b.model and a.map_id != before.map_id
    # the index covers the new places: each new descriptor finds itself
    _, ids = a.index.search(np.asarray(a.descriptors[len(before):]), 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(len(before), len(a)))


def test_append_keeps_the_pca_and_index_settings(bags, tmp_path):
    first, second = bags
    out = tmp_path / "map"
    assert (
        _build("--bag", first, "--model", MODEL, "--index", "hnsw", "--pca-dim", "8", "--out", out)
        == 0
    )
    before = load_map(out)
    pca_before = before.index.pca
    assert _build("--append", "--bag", second, "--out", out) == 0
    after = load_map(out)
    assert after.manifest.index.type == "hnsw"
    assert after.manifest.index.params == before.manifest.index.params
    assert after.manifest.index.pca == before.manifest.index.pca
    # kept, not learned again from old + new places
    np.testing.assert_array_equal(after.index.pca.components, pca_before.components)
    np.testing.assert_array_equal(after.index.pca.mean, pca_before.mean)
    assert after.index.size == len(after) == len(before) + 26
    new = np.asarray(after.descriptors[len(before):])
    np.testing.assert_allclose(
        np.asarray(after.index.rescore_vectors[len(before):], np.float32),
        pca_before.project(new),
        atol=2e-3,  # float16
    )


def test_append_asks_for_index_changes_through_build_index(bags, tmp_path, capsys):
    first, second = bags
    out = tmp_path / "map"
    assert _build("--bag", first, "--model", MODEL, "--out", out) == 0
    assert _build("--append", "--bag", second, "--out", out, "--index", "hnsw") == 2
    assert "vpr-ros build-index" in capsys.readouterr().err


def test_append_refuses_another_model_and_leaves_the_map(bags, tmp_path, capsys):
    first, second = bags
    out = tmp_path / "map"
    assert _build("--bag", first, "--model", MODEL, "--out", out) == 0
    before = _snapshot(out)
    assert _build("--append", "--bag", second, "--model", "baseline", "--out", out) == 2
    err = capsys.readouterr().err
    assert "another model or weights" in err and "leave --model out" in err
    assert "fingerprint" in err
    assert _snapshot(out) == before


def test_append_refuses_a_bag_already_in_the_map(bags, tmp_path, capsys):
    first, second = bags
    out = tmp_path / "map"
    assert _build("--bag", first, "--model", MODEL, "--out", out) == 0
    before = _snapshot(out)
    assert _build("--append", "--bag", first, "--out", out) == 2
    assert "is already in map" in capsys.readouterr().err
    # the same recording copied elsewhere is recognised by its frames
    copy = tmp_path / "copy_of_first"
    shutil.copytree(first, copy)
    assert _build("--append", "--bag", copy, "--out", out) == 2
    err = capsys.readouterr().err
    assert "30 of the 30 new frames" in err and "already in map" in err
    assert _snapshot(out) == before


def test_failed_append_leaves_the_old_map(bags, tmp_path):
    first, second = bags
    out = tmp_path / "map"
    assert _build("--bag", first, "--model", MODEL, "--out", out) == 0
    before = _snapshot(out)
    damaged = tmp_path / "damaged"
    shutil.copytree(second, damaged)
    source = BagSource([damaged], CAMERA_TOPIC, GPS_TOPIC, min_distance_m=2.0)
    # damaged after it was listed, so extraction fails inside the append's temporary directory
    db = next(damaged.glob("*.db3"))
    with open(db, "r+b") as f:
        f.seek(db.stat().st_size // 2)
        f.write(os.urandom(1 << 18))
    extractor = create_extractor(MODEL)
    with pytest.raises(BagError, match="damaged"):
        append_to_map(
            out,
            in_process(source, extractor),
            extractor.describe(),
            source.describe(),
        )
    assert _snapshot(out) == before
    load_map(out)
    assert not [p for p in tmp_path.iterdir() if PARTIAL in p.name]


@pytest.mark.slow  # XFeat on every place, twice: about a minute here
def test_append_extends_the_local_features(bags, tmp_path):
    first, second = bags
    grown, whole = tmp_path / "grown", tmp_path / "whole"
    sparse = ("--min-distance", "55")  # every third frame: XFeat is slow on a busy CPU
    common = ("--model", MODEL, "--rerank", "xfeat", *sparse)
    assert _build("--bag", first, *common, "--out", grown) == 0
    # the map's re-ranker is used when --rerank is left out
    assert _build("--append", "--bag", second, *sparse, "--out", grown) == 0
    assert _build("--bag", first, "--bag", second, *common, "--out", whole) == 0
    a, b = load_map(grown), load_map(whole)
    assert list(a.places) == list(b.places)
    described = {k: v for k, v in a.manifest.files.items() if k.startswith("local/")}
    assert described and set(described) == {
        k for k in b.manifest.files if k.startswith("local/")
    }
    store_a = LocalFeatureStore.open(grown, _xfeat_description(grown), len(a))
    store_b = LocalFeatureStore.open(whole, _xfeat_description(whole), len(b))
    np.testing.assert_array_equal(store_a.offsets, store_b.offsets)
    np.testing.assert_allclose(
        np.asarray(store_a.descriptors, np.float32),
        np.asarray(store_b.descriptors, np.float32),
        atol=1e-2,
    )


def _xfeat_description(map_dir: Path) -> dict:
    import json

    return json.loads((map_dir / "local" / "meta.json").read_text())


def test_manifest_checksums_cover_the_appended_files(bags, tmp_path):
    first, second = bags
    out = tmp_path / "map"
    assert _build("--bag", first, "--model", MODEL, "--out", out) == 0
    assert _build("--append", "--bag", second, "--out", out) == 0
    files = load_map(out).manifest.files
    on_disk = {k: v for k, v in _snapshot(out).items() if k != MANIFEST}
    assert files == on_disk


def test_places_of_a_bag_started_in_another_utm_zone_join_the_maps_zone():
    import utm

    from vpr_ros.maps.build import one_utm_zone
    from vpr_ros.maps.places import Place

    # 6 degrees east is the border between zones 31 and 32 (away from the Norway exception)
    west, east = (48.0, 5.999), (48.0, 6.001)
    places = []
    for i, (lat, lon) in enumerate((west, east)):
        x, y, number, letter = utm.from_latlon(lat, lon)
        places.append(Place(i, i + 1, x, y, 0.0, lat=lat, lon=lon, utm_zone=f"{number}{letter}"))
    joined = one_utm_zone(places)
    assert [p.utm_zone for p in joined] == ["31U", "31U"]
    assert joined[0] == places[0]
    x, y, _, _ = utm.from_latlon(*east, force_zone_number=31, force_zone_letter="U")
    assert (joined[1].x, joined[1].y) == pytest.approx((x, y))
    # 0.002 degrees (~149 m) east of the first place, not a zone width (~600 km) away
    assert joined[1].x - joined[0].x == pytest.approx(0.002 * 111_320 * 0.669, abs=3)
