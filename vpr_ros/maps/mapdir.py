"""The map directory: manifest, faiss index, place table, descriptors.

    map/
      manifest.json    format version, map id, model, index, sources, sha256 of every file
      index.faiss
      places.csv
      descriptors.npy  memory-mapped on load; the index can be rebuilt from it

Written through ``atomic_directory``; loading verifies the format version,
every checksum and the model fingerprint before anything is used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vpr_ros.errors import MapError, MapIntegrityError, MapModelMismatchError, MapNotFoundError
from vpr_ros.index.faiss_index import IndexConfig, PlaceIndex
from vpr_ros.maps.atomic import atomic_directory
from vpr_ros.maps.places import Place, read_places, write_places

FORMAT = "vpr_ros/map"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
PLACES_FILE = "places.csv"
DESCRIPTORS_FILE = "descriptors.npy"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class VprMap:
    path: Path
    manifest: dict
    places: list[Place]
    descriptors: np.ndarray
    index: PlaceIndex

    @property
    def map_id(self) -> str:
        return self.manifest["map_id"]

    @property
    def model(self) -> dict:
        return self.manifest["model"]

    def __len__(self) -> int:
        return len(self.places)


def write_map(
    target: str | Path,
    descriptors: np.ndarray,
    places: list[Place],
    model: dict,
    index_config: IndexConfig,
    sources: list[dict],
) -> Path:
    """Write a complete map to ``target`` atomically (an existing map there is replaced only on success)."""
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if len(descriptors) != len(places) or len(places) == 0:
        raise MapError(f"cannot write a map with {len(places)} places and {len(descriptors)} descriptors: "
                       "the sources gave no usable frames; check the image topic and --min-distance")
    index = PlaceIndex.build(descriptors, index_config)
    target = Path(target)
    with atomic_directory(target) as tmp:
        np.save(tmp / DESCRIPTORS_FILE, descriptors)
        write_places(tmp / PLACES_FILE, places)
        index.save(tmp / INDEX_FILE)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "map_id": uuid.uuid4().hex,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": model,
            "index": {"type": index.config.type, "params": index.config.params},
            "place_count": len(places),
            "dim": int(descriptors.shape[1]),
            "sources": sources,
            "files": {name: _sha256(tmp / name) for name in (DESCRIPTORS_FILE, PLACES_FILE, INDEX_FILE)},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    mf = path / MANIFEST
    if not path.exists():
        raise MapNotFoundError(f"no map at {path}: build one with `vpr-ros build-map --out {path} ...` or fix the map path")
    if not mf.is_file():
        raise MapNotFoundError(f"{path} is not a vpr_ros map (no {MANIFEST}); point the map path at a directory written by `vpr-ros build-map`")
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapIntegrityError(f"{mf} is not valid JSON ({e}); the map is damaged: rebuild it with `vpr-ros build-map`") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("format_version"), int):
        raise MapError(f"{mf} is not a vpr_ros map manifest; rebuild the map with `vpr-ros build-map`")
    if manifest["format_version"] > FORMAT_VERSION:
        raise MapError(f"{path} has map format {manifest['format_version']}, newer than this vpr_ros reads ({FORMAT_VERSION}); upgrade vpr_ros")
    if manifest["format_version"] < FORMAT_VERSION:
        raise MapError(f"{path} has old map format {manifest['format_version']}; rebuild it with `vpr-ros build-map`")
    return manifest


def verify_files(path: str | Path, manifest: dict) -> list[str]:
    """Problems found comparing files with the manifest's checksums (empty when the map verifies)."""
    path = Path(path)
    problems = []
    for name, digest in manifest["files"].items():
        f = path / name
        if not f.is_file():
            problems.append(f"{name} is missing")
        elif _sha256(f) != digest:
            problems.append(f"{name} was altered (sha256 differs from the manifest)")
    return problems


def model_differences(map_model: dict, running: dict) -> list[str]:
    keys = ("name", "fingerprint", "input_size", "dim", "preprocessing")
    return [f"{k}: map has {map_model.get(k)!r}, running extractor has {running.get(k)!r}" for k in keys if map_model.get(k) != running.get(k)]


def load_map(path: str | Path, expected_model: dict | None = None, verify: bool = True) -> VprMap:
    """Load and check a map. ``expected_model`` is the running extractor's ``describe()``."""
    path = Path(path)
    manifest = read_manifest(path)
    if verify and (problems := verify_files(path, manifest)):
        raise MapIntegrityError(f"map {path} does not verify: {'; '.join(problems)}. Rebuild it with `vpr-ros build-map`"
                                " (or restore it from a backup)")
    if expected_model is not None and (diff := model_differences(manifest["model"], expected_model)):
        raise MapModelMismatchError(
            f"map {path} was built with another model or weights ({'; '.join(diff)}). Run with the map's model "
            f"({manifest['model'].get('name')}) and the same weights, or rebuild the map with the current model")
    descriptors = np.load(path / DESCRIPTORS_FILE, mmap_mode="r")
    places = read_places(path / PLACES_FILE)
    if len(places) != len(descriptors) or len(places) != manifest["place_count"]:
        raise MapIntegrityError(f"map {path}: {len(places)} places, {len(descriptors)} descriptors, manifest says "
                                f"{manifest['place_count']}; rebuild it with `vpr-ros build-map`")
    config = IndexConfig(manifest["index"]["type"], manifest["index"]["params"])
    index = PlaceIndex.load(path / INDEX_FILE, config, descriptors)
    return VprMap(path, manifest, places, descriptors, index)
