"""
Damaged maps, full disks and killed writers: a map on disk is never left half-written.

Every damage must end in a MapError that names the file or field and says how to fix it; no
other exception, no "verifies" for a map the loader refuses, no debris left by dead writers.
"""

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vpr_ros.cli import main as cli_main
from vpr_ros.errors import MapError, MapIntegrityError, MapManifestError
from vpr_ros.fileio import PARTIAL, atomic_directory, file_sha256, remove_debris
from vpr_ros.search.faiss_index import IndexConfig
from vpr_ros.maps.mapdir import load_map, read_manifest, with_checksum, write_map
from vpr_ros.maps.places import Place, write_places
from vpr_harness.replay.fuzz_maps import run_map_campaign
from vpr_harness.replay.map_write_faults import full_disk_trial

MODEL = {"name": "baseline", "fingerprint": "abc123", "input_size": [32, 64], "dim": 16,
         "preprocessing": {"resize": [32, 64], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}


def _write(path: Path, n: int = 40, dim: int = 16, seed: int = 0) -> Path:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    places = [Place(i, 10**9 * i, float(i), 0.0) for i in range(n)]
    return write_map(
        path,
        x,
        places,
        {**MODEL, "dim": dim},
        IndexConfig("flat", pca_dim=None),
        [{"source": "test"}],
    )


def _edit_manifest(path: Path, edit, fix_checksum: bool = True) -> None:
    mf = path / "manifest.json"
    manifest = json.loads(mf.read_text())
    edit(manifest)
    mf.write_text(json.dumps(with_checksum(manifest) if fix_checksum else manifest))


def _refresh_digest(path: Path, name: str) -> None:
    """Someone replaced a file and updated its sha256 too: only the content checks can catch it."""
    _edit_manifest(path, lambda m: m["files"].__setitem__(name, file_sha256(path / name)))


@pytest.fixture
def good_map(tmp_path):
    return _write(tmp_path / "m")


# -- defect 1 and 2: each damage the issue found, now a MapError naming what is wrong -------------
DAMAGES = {
    "map_id dropped": (
        lambda p: _edit_manifest(p, lambda m: m.pop("map_id"), fix_checksum=False),
        True,
        "was altered",
    ),
    "map_id dropped, checksum fixed": (
        lambda p: _edit_manifest(p, lambda m: m.pop("map_id")),
        True,
        "'map_id' must be present",
    ),
    "model dropped": (
        lambda p: _edit_manifest(p, lambda m: m.pop("model")),
        True,
        "'model' must be present",
    ),
    "index type hnsw without its params": (
        lambda p: _edit_manifest(p, lambda m: m["index"].__setitem__("type", "hnsw")),
        True,
        "'index.params.M' must be present",
    ),
    "index type bogus": (
        lambda p: _edit_manifest(p, lambda m: m["index"].__setitem__("type", "bogus")),
        True,
        "'index.type' must be one of flat, hnsw, ivfpq",
    ),
    "files dropped": (
        lambda p: _edit_manifest(p, lambda m: m.pop("files")),
        True,
        "'files' must be present",
    ),
    "manifest is a list": (
        lambda p: (p / "manifest.json").write_text("[1, 2]"),
        True,
        "not a vpr_ros map manifest",
    ),
    "descriptors truncated": (
        lambda p: (p / "descriptors.npy").write_bytes((p / "descriptors.npy").read_bytes()[:200]),
        False,
        "descriptors.npy cannot be read",
    ),
    "index.faiss foreign bytes": (
        lambda p: (p / "index.faiss").write_bytes(b"\xff" * 64),
        False,
        "index.faiss cannot be read",
    ),
    "index.faiss truncated": (
        lambda p: (p / "index.faiss").write_bytes((p / "index.faiss").read_bytes()[:100]),
        False,
        "index.faiss cannot be read",
    ),
    "places with fewer rows, digest updated": (
        lambda p: (
            write_places(p / "places.csv", [Place(i, 0) for i in range(5)]),
            _refresh_digest(p, "places.csv"),
        ),
        True,
        "places.csv has 5 places, the manifest says 40",
    ),
    "descriptors float64, digest updated": (
        lambda p: (
            np.save(p / "descriptors.npy", np.zeros((40, 16))),
            _refresh_digest(p, "descriptors.npy"),
        ),
        True,
        "descriptors.npy holds float64",
    ),
    "old format 1": (
        lambda p: _edit_manifest(p, lambda m: m.__setitem__("format_version", 1)),
        True,
        "old map format 1",
    ),
}


@pytest.mark.parametrize("name", DAMAGES)
def test_damaged_map_is_refused_naming_the_problem_and_the_fix(good_map, name):
    damage, verify, message = DAMAGES[name]
    damage(good_map)
    with pytest.raises(MapError) as e:
        load_map(good_map, MODEL, verify=verify)
    assert message in str(e.value)
    assert "vpr-ros build-map" in str(e.value) or "upgrade" in str(e.value)


def test_unverified_load_still_checks_structure(good_map):
    # the node's verify_map:=false skips sha256, not the checks that keep it alive
    (good_map / "descriptors.npy").write_bytes((good_map / "descriptors.npy").read_bytes()[:-8])
    with pytest.raises(MapIntegrityError, match="descriptors.npy"):
        load_map(good_map, verify=False)


def test_inspect_map_never_says_verifies_for_a_map_localize_refuses(good_map, capsys):
    # the case: "files": {} and descriptors.npy cut to 200 bytes printed "verifies yes"
    _edit_manifest(good_map, lambda m: m.__setitem__("files", {}))
    (good_map / "descriptors.npy").write_bytes((good_map / "descriptors.npy").read_bytes()[:200])
    assert cli_main(["inspect-map", str(good_map)]) == 1
    out = capsys.readouterr().out
    assert (
        "verifies   NO" in out and "files.descriptors.npy" in out and "verifies   yes" not in out
    )


def test_inspect_map_verifies_a_good_map(good_map, capsys):
    assert cli_main(["inspect-map", str(good_map)]) == 0
    assert "verifies   yes" in capsys.readouterr().out


def test_manifest_checksum_catches_any_edit(good_map):
    _edit_manifest(good_map, lambda m: m.__setitem__("place_count", 39), fix_checksum=False)
    with pytest.raises(MapManifestError, match="manifest_sha256"):
        read_manifest(good_map)


def test_localize_refuses_a_damaged_map_in_one_line(good_map, tmp_path):
    _edit_manifest(good_map, lambda m: m.pop("model"))
    (tmp_path / "q").mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vpr_ros.cli",
            "localize",
            "--map",
            str(good_map),
            "--images",
            str(tmp_path / "q"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "'model' must be present" in r.stderr


@pytest.mark.slow
def test_map_fuzzing_every_damage_is_a_clear_refusal(tmp_path):
    result = run_map_campaign(
        n=0, subprocess_sample=1, workdir=tmp_path, progress=False, index_types=("hnsw",)
    )
    assert result["inputs"] >= 400
    assert result["refused"] == result["inputs"], "\n".join(result["failures"])
    assert result["crashes"] == 0 and result["false_verifies"] == 0 and result["accepted"] == 0
    assert result["subprocess_checked"] == 1 and result["subprocess_failed"] == 0, result[
        "failures"
    ]


# -- full disk ------------------------------------------------------------------------------------
def test_full_disk_is_a_clear_error_and_the_old_map_stays(tmp_path):
    result = full_disk_trial(tmp_path)  # a real ENOSPC on a 3 MiB tmpfs of its own
    if "skipped" in result:
        pytest.skip(result["skipped"])
    assert (
        "the disk is full" in result["error"]
        and "previous map there (if any) is unchanged" in result["error"]
    )
    assert result["old_map_intact"]
    assert result["left_beside"] == []  # nothing half-written beside the map


# -- defect 3: debris of killed writers -----------------------------------------------------------
def _write_slowly(target: Path, release: Path | None) -> None:
    with atomic_directory(target) as tmp:
        (tmp / "descriptors.npy").write_bytes(b"\0" * 1_000_000)
        while release is None or not release.exists():
            time.sleep(0.05)


def _partials(target: Path) -> list[str]:
    return sorted(
        p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}{PARTIAL}")
    )


def _start_writer(target: Path, release: Path | None) -> mp.Process:
    proc = mp.get_context("spawn").Process(target=_write_slowly, args=(target, release))
    before = set(_partials(target))
    proc.start()
    deadline = time.time() + 60
    while (
        not any(n.endswith(".lock") for n in set(_partials(target)) - before)
        and time.time() < deadline
    ):
        time.sleep(0.05)
    while time.time() < deadline and not any(
        (target.parent / n / "descriptors.npy").exists() for n in set(_partials(target)) - before
    ):
        time.sleep(0.05)
    return proc


def test_next_writer_removes_dead_writers_debris_but_never_a_live_one(tmp_path):
    target = _write(tmp_path / "m")
    before = load_map(target).map_id
    dead = _start_writer(target, None)
    os.kill(dead.pid, signal.SIGKILL)
    dead.join()
    dead_entries = _partials(target)
    assert len(dead_entries) == 2  # its directory and its lock file
    (tmp_path / ".m.partial-legacy0").mkdir()  # debris of a build from before the lock files
    release = tmp_path / "release"
    live = _start_writer(target, release)  # a writer cleans dead writers' debris as it starts
    live_entries = _partials(target)
    # dead and legacy debris gone
    assert len(live_entries) == 2 and not set(live_entries) & set(dead_entries)
    # another cleaner while the live writer works: nothing of it touched
    assert remove_debris(target) == 0
    assert _partials(target) == live_entries
    assert load_map(target).map_id == before
    release.touch()
    live.join(60)
    assert live.exitcode == 0
    assert _partials(target) == [] and (target / "descriptors.npy").stat().st_size == 1_000_000


def test_a_build_after_a_killed_one_leaves_no_debris(tmp_path):
    target = _write(tmp_path / "m")
    dead = _start_writer(target, None)
    os.kill(dead.pid, signal.SIGKILL)
    dead.join()
    assert _partials(target)
    _write(target, seed=1)
    assert _partials(target) == []
    assert len(load_map(target)) == 40
