"""Map directory format: atomic writes, verification, model mismatch, index types."""

import json
import math
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from vpr_ros.errors import MapError, MapIntegrityError, MapModelMismatchError, MapNotFoundError
from vpr_ros.search.faiss_index import IndexConfig, PlaceIndex
from vpr_ros.fileio import atomic_directory
from vpr_ros.maps.mapdir import load_map, read_manifest, verify_files, write_map
from vpr_ros.maps.places import Place, read_places, write_places

MODEL = {"name": "baseline", "fingerprint": "abc123", "input_size": [32, 64], "dim": 16,
         "preprocessing": {"resize": [32, 64], "mean": [0, 0, 0], "std": [1, 1, 1]}}


def _descriptors(n, dim=16, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _places(n):
    return [
        Place(
            i,
            1_000_000_000 * i,
            500000.0 + i,
            4000000.0 + 2 * i,
            0.0,
            0,
            0,
            0,
            1,
            45.0,
            9.0,
            "32T",
            "bag",
            "/cam",
        )
        for i in range(n)
    ]


def _write(path, n=50, model=MODEL):
    return write_map(
        path,
        _descriptors(n),
        _places(n),
        model,
        IndexConfig("flat"),
        [{"bag": "b", "image_topic": "/cam"}],
    )


def test_places_round_trip_keeps_nan_and_values(tmp_path):
    places = _places(3) + [Place(3, 7)]
    write_places(tmp_path / "p.csv", places)
    back = read_places(tmp_path / "p.csv")
    assert back[:3] == places[:3]
    assert back[3].position is None and back[3].orientation is None and math.isnan(back[3].lat)


def test_written_map_loads_and_verifies(tmp_path):
    _write(tmp_path / "m")
    m = load_map(tmp_path / "m", MODEL)
    assert len(m) == 50 and m.descriptors.shape == (50, 16)
    assert isinstance(m.descriptors, np.memmap)
    manifest = read_manifest(tmp_path / "m")
    assert manifest.place_count == 50 and manifest.to_dict()["model"] == MODEL
    assert set(manifest.files) == {"descriptors.npy", "places.csv", "index.faiss"}
    assert verify_files(tmp_path / "m", manifest) == []
    # no temporary directories are left beside the map
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_missing_map_says_how_to_build_one(tmp_path):
    with pytest.raises(MapNotFoundError, match="vpr-ros build-map"):
        load_map(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MapNotFoundError, match="not a vpr_ros map"):
        load_map(tmp_path / "empty")


@pytest.mark.parametrize("damage", ["remove", "alter"])
def test_damaged_file_is_refused_naming_it(tmp_path, damage):
    _write(tmp_path / "m")
    f = tmp_path / "m" / "places.csv"
    if damage == "remove":
        f.unlink()
    else:
        f.write_text(f.read_text().replace("500001.0", "500001.5"))
    with pytest.raises(MapIntegrityError, match="places.csv (is missing|was altered)"):
        load_map(tmp_path / "m")


def test_corrupt_manifest_is_refused(tmp_path):
    _write(tmp_path / "m")
    (tmp_path / "m" / "manifest.json").write_text("{not json")
    with pytest.raises(MapIntegrityError, match="not valid JSON"):
        load_map(tmp_path / "m")


def test_newer_format_asks_for_upgrade(tmp_path):
    _write(tmp_path / "m")
    mf = tmp_path / "m" / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["format_version"] = 99
    mf.write_text(json.dumps(manifest))
    with pytest.raises(MapError, match="upgrade vpr_ros"):
        load_map(tmp_path / "m")


def test_map_from_another_model_is_refused_with_differences(tmp_path):
    _write(tmp_path / "m")
    other = {**MODEL, "name": "scicevpr-b", "fingerprint": "fff", "dim": 10752}
    with pytest.raises(MapModelMismatchError) as e:
        load_map(tmp_path / "m", other)
    text = str(e.value)
    assert "name: map has 'baseline', running extractor has 'scicevpr-b'" in text
    assert "fingerprint" in text and "dim" in text


def test_failed_build_keeps_the_existing_map(tmp_path):
    _write(tmp_path / "m")
    before = read_manifest(tmp_path / "m").map_id
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "m") as tmp:
            (tmp / "manifest.json").write_text("half")
            raise RuntimeError("crash in the middle")
    assert read_manifest(tmp_path / "m").map_id == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_rebuild_replaces_the_map(tmp_path):
    _write(tmp_path / "m")
    before = read_manifest(tmp_path / "m").map_id
    _write(tmp_path / "m", n=20)
    m = load_map(tmp_path / "m")
    assert m.map_id != before and len(m) == 20
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def _slow_write(path):
    with atomic_directory(path) as tmp:
        (tmp / "manifest.json").write_text("partial")
        time.sleep(60)


def test_process_killed_mid_write_leaves_old_map_intact(tmp_path):
    _write(tmp_path / "m")
    before = read_manifest(tmp_path / "m").map_id
    proc = mp.get_context("spawn").Process(target=_slow_write, args=(tmp_path / "m",))
    proc.start()
    deadline = time.time() + 30
    while (
        not any(p.name.startswith(".m.partial-") for p in tmp_path.iterdir())
        and time.time() < deadline
    ):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert load_map(tmp_path / "m").map_id == before


def test_write_refuses_an_empty_map(tmp_path):
    with pytest.raises(MapError, match="no usable frames"):
        write_map(tmp_path / "m", np.zeros((0, 16), np.float32), [], MODEL, IndexConfig(), [])
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_index_types_find_the_query_place(tmp_path, kind):
    db = _descriptors(2000, dim=64, seed=1)
    config = IndexConfig(kind, {"nlist": 16, "m": 16} if kind == "ivfpq" else {})
    index = PlaceIndex.build(db, config)
    queries = db[::100] + 0.02 * _descriptors(20, dim=64, seed=2)
    scores, ids = index.search(queries / np.linalg.norm(queries, axis=1, keepdims=True), 5)
    assert (ids[:, 0] == np.arange(0, 2000, 100)).mean() >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    index.save(tmp_path)
    again = PlaceIndex.load(tmp_path, index.describe(), db.shape[1])
    assert np.array_equal(again.search(queries, 5)[1], index.search(queries, 5)[1])


def test_auto_index_is_exact_for_small_maps():
    assert IndexConfig("auto").resolved(1000, 64).type == "flat"
    assert IndexConfig("auto").resolved(200_000, 64).type == "hnsw"


def test_place_table_by_column_matches_the_rows(tmp_path):
    places = [
        Place(0, 5, 1.5, 2.5, math.nan, source='bag "a", day', topic="/cam"),
        Place(1, 2**62, utm_zone="32U", source="b", topic="/cam"),
        Place(2, 9, 3.0, 4.0, 5.0, lat=48.1, lon=11.5, source="b", topic="/cam"),
    ]
    write_places(tmp_path / "p.csv", places)
    table = read_places(tmp_path / "p.csv")
    # repr: NaN never equals NaN
    assert [repr(p) for p in table] == [repr(p) for p in places]
    assert [repr(p) for p in table[1:]] == [repr(p) for p in places[1:]]
    assert table.place_ids.tolist() == [0, 1, 2]
    xyz = table.positions()
    assert xyz[0].tolist() == [1.5, 2.5, 0.0] and np.isnan(xyz[1]).all()
    assert xyz[2].tolist() == [3.0, 4.0, 5.0]


def test_damaged_places_file_is_refused(tmp_path):
    write_places(tmp_path / "p.csv", _places(3))
    text = (tmp_path / "p.csv").read_text().splitlines()
    (tmp_path / "p.csv").write_text("\n".join(text[:2] + [text[2].replace(",", ";", 3)]))
    with pytest.raises(ValueError):
        read_places(tmp_path / "p.csv")
