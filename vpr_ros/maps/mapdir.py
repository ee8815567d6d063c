"""
The map directory: manifest, faiss index, place table, descriptors.

    map/
      manifest.json    format version, map id, model, index, sources, sha256 of every file
      index.faiss
      places.csv
      descriptors.npy  memory-mapped on load; the index can be rebuilt from it

Written through ``atomic_directory``.  Loading is all-or-nothing: the manifest is
checked against its own checksum and a schema, every file against the manifest's
sha256, the model against the running extractor, and every file's content against
the manifest (shape, dtype, counts, index type) before a ``VprMap`` is returned; any
damage is a ``MapError`` naming the file or field and the fix, never another exception.

The manifest protects itself with ``manifest_sha256``: the sha256 of its own body
(every other key) as canonical JSON.  Kept inside the manifest rather than in a
sidecar file so a map stays one self-describing manifest that cannot be copied
without its checksum; canonical JSON makes it independent of indentation.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import faiss
import numpy as np

from vpr_ros.errors import (
    MapError,
    MapIntegrityError,
    MapManifestError,
    MapModelMismatchError,
    MapNotFoundError,
)
from vpr_ros.fileio import atomic_directory, file_sha256, out_of_space
from vpr_ros.search.faiss_index import INDEX_FILE, IndexConfig, PlaceIndex
from vpr_ros.search.pca import Pca
from vpr_ros.maps.places import Place, PlaceTable, read_places, write_places
from vpr_ros.on_map import NullSimilarity, compute_null

FORMAT = "vpr_ros/map"
FORMAT_VERSION = 2  # 2: manifest checksum (manifest_sha256) and schema
MANIFEST = "manifest.json"
MANIFEST_CHECKSUM = "manifest_sha256"
PLACES_FILE = "places.csv"
DESCRIPTORS_FILE = "descriptors.npy"
REQUIRED_FILES = (DESCRIPTORS_FILE, PLACES_FILE, INDEX_FILE)
NULL_KEY = "null_similarity"  # optional: quantiles of vpr_ros.on_map.NullSimilarity
LOCAL_PREFIX = "local/"  # a re-ranker's local features (vpr_ros.maps.local_features)
# The faiss class each manifest index type must load as (METRIC_INNER_PRODUCT throughout).
FAISS_CLASSES = {"flat": faiss.IndexFlat, "hnsw": faiss.IndexHNSW, "ivfpq": faiss.IndexIVFPQ}
INDEX_PARAMS = {
    "flat": (),
    "hnsw": ("M", "efConstruction", "efSearch", "rescore"),
    "ivfpq": ("nlist", "m", "nbits", "nprobe", "rescore"),
}


def _rebuild(path: Path) -> str:
    return f"rebuild it with `vpr-ros build-map --out {path} ...` (or restore it from a backup)"


@dataclass
class VprMap:
    path: Path
    manifest: dict
    places: PlaceTable
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

    @functools.cached_property
    def null_similarity(self) -> NullSimilarity | None:
        """
        Return the map's null (``vpr_ros.on_map``): stored by the build, else computed here.

        None for a map too small to have places elsewhere.
        """
        if NULL_KEY in self.manifest:
            return NullSimilarity(tuple(self.manifest[NULL_KEY]))
        xy = self.places.positions()[:, :2]
        return compute_null(self.index.search, np.asarray(self.descriptors), xy)


@contextlib.contextmanager
def write_errors(target: Path, needed: int) -> Iterator[None]:
    """
    Turn a failed write under ``target`` into a MapError.

    A full disk or an I/O error (faiss reports its own as RuntimeError) becomes a MapError that
    says what happened and that the previous map is unchanged.
    """
    try:
        yield
    except (OSError, RuntimeError) as e:
        reason = out_of_space(e, target.parent, needed) or "writing failed"
        raise MapError(
            f"cannot write the map to {target}: {reason} ({e}). Nothing was written; the previous"
            f" map there (if any) is unchanged. Free space on {target.parent} or choose another"
            " --out"
        ) from None


def write_map(
    target: str | Path,
    descriptors: np.ndarray,
    places: list[Place],
    model: dict,
    index_config: IndexConfig,
    sources: list[dict],
) -> Path:
    """
    Write a complete map to ``target`` atomically.

    An existing map there is replaced only on success. A full disk (or any other write
    failure) is a ``MapError``; the temporary directory is removed and the previous map at
    ``target`` is untouched.
    """
    target = Path(target)
    with write_errors(target, 2 * np.asarray(descriptors).nbytes), atomic_directory(target) as tmp:
        write_map_into(tmp, target, descriptors, places, model, index_config, sources)
    return target


def write_map_into(
    tmp: Path,
    target: Path,
    descriptors: np.ndarray,
    places: list[Place],
    model: dict,
    index_config: IndexConfig,
    sources: list[dict],
    extra_files: dict[str, str] | None = None,
    pca: Pca | None = None,
) -> None:
    """
    Write descriptors, places, index and manifest into ``tmp``.

    ``tmp`` is the open ``atomic_directory`` of ``target``. ``extra_files``: {relative path:
    sha256} of files already written there (e.g. ``local/``), protected by the manifest like
    the rest. ``pca``: the search space's projection to keep instead of learning one.
    """
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if len(descriptors) != len(places) or len(places) == 0:
        raise MapError(
            f"cannot write a map with {len(places)} places and {len(descriptors)} descriptors: "
            "the sources gave no usable frames; check the image topic and --min-distance"
        )
    index = PlaceIndex.build(descriptors, index_config, pca)
    xy = np.array([(p.x, p.y) for p in places], dtype=np.float64)
    null = compute_null(index.search, descriptors, xy)
    # descriptors.npy plus an index of about the same size
    with write_errors(target, 2 * descriptors.nbytes):
        np.save(tmp / DESCRIPTORS_FILE, descriptors)
        write_places(tmp / PLACES_FILE, places)
        index_files = index.save(tmp)  # index.faiss, and pca.npz / rescore_f16.npy where used
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "map_id": uuid.uuid4().hex,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": model,
            "index": index.describe(),
            "place_count": len(places),
            "dim": int(descriptors.shape[1]),
            "sources": sources,
            **({NULL_KEY: null.to_manifest()} if null is not None else {}),
            "files": {
                **{
                    name: file_sha256(tmp / name)
                    for name in (DESCRIPTORS_FILE, PLACES_FILE, *index_files)
                },
                **(extra_files or {}),
            },
        }
        manifest = with_checksum(manifest)
        # a writer bug must not produce a map that never loads
        validate_manifest(manifest, tmp / MANIFEST)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def manifest_checksum(manifest: dict) -> str:
    """sha256 of the manifest's body (every key but the checksum) as canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def with_checksum(manifest: dict) -> dict:
    return {**manifest, MANIFEST_CHECKSUM: manifest_checksum(manifest)}


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and np.isfinite(v)


def _is_relative_file(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def validate_manifest(manifest: Any, where: Path) -> None:
    """
    Check types and ranges of every field the loader uses.

    MapManifestError names the first bad one.
    """

    def need(ok: bool, field: str, want: str) -> None:
        if not ok:
            raise MapManifestError(
                f"{where}: field {field!r} must be {want}; the manifest is damaged:"
                f" {_rebuild(where.parent)}"
            )

    def obj(parent: dict, key: str, field: str) -> dict:
        need(key in parent, field, "present")
        need(isinstance(parent[key], dict), field, "an object")
        return parent[key]

    def value(parent: dict, key: str, field: str, ok: Callable[[Any], bool], want: str) -> Any:
        need(key in parent, field, "present")
        need(ok(parent[key]), field, want)
        return parent[key]

    need(isinstance(manifest, dict), "(top level)", "an object")
    text = lambda v: isinstance(v, str) and v != ""  # noqa: E731
    positive = lambda v: _is_int(v) and v > 0  # noqa: E731
    value(manifest, "format", "format", lambda v: v == FORMAT, repr(FORMAT))
    value(
        manifest,
        "format_version",
        "format_version",
        lambda v: v == FORMAT_VERSION,
        str(FORMAT_VERSION),
    )
    value(
        manifest,
        MANIFEST_CHECKSUM,
        MANIFEST_CHECKSUM,
        lambda v: isinstance(v, str) and _SHA256.fullmatch(v),
        "a sha256 hex digest",
    )
    value(manifest, "map_id", "map_id", text, "a non-empty string")
    value(
        manifest,
        "created",
        "created",
        lambda v: isinstance(v, str) and _iso_time(v),
        "an ISO 8601 time",
    )
    model = obj(manifest, "model", "model")
    value(model, "name", "model.name", text, "a non-empty string")
    value(model, "fingerprint", "model.fingerprint", text, "a non-empty string")
    value(
        model,
        "input_size",
        "model.input_size",
        lambda v: isinstance(v, list) and len(v) == 2 and all(map(positive, v)),
        "[height, width] in positive pixels",
    )
    dim = value(model, "dim", "model.dim", positive, "a positive integer")
    pre = obj(model, "preprocessing", "model.preprocessing")
    value(
        pre,
        "resize",
        "model.preprocessing.resize",
        lambda v: isinstance(v, list) and len(v) == 2 and all(map(positive, v)),
        "[height, width] in positive pixels",
    )
    for key in ("mean", "std"):
        value(
            pre,
            key,
            f"model.preprocessing.{key}",
            lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_number, v)),
            "3 numbers (one per RGB channel)",
        )
    index = obj(manifest, "index", "index")
    kind = value(
        index,
        "type",
        "index.type",
        lambda v: isinstance(v, str) and v in INDEX_PARAMS,
        f"one of {', '.join(INDEX_PARAMS)}",
    )
    params = obj(index, "params", "index.params")
    for name in INDEX_PARAMS[kind]:
        value(
            params,
            name,
            f"index.params.{name}",
            positive,
            f"a positive integer (index type {kind})",
        )
    search_dim = value(index, "dim", "index.dim", positive, "a positive integer")
    # the search space: PCA into it (or the model's dims) and float16 vectors re-scoring shortlists
    index_files = []
    if index.get("pca") is not None:
        pca = obj(index, "pca", "index.pca")
        value(
            pca, "input_dim", "index.pca.input_dim", lambda v: v == dim, f"the model's dim ({dim})"
        )
        value(
            pca,
            "output_dim",
            "index.pca.output_dim",
            lambda v: v == search_dim,
            f"index.dim ({search_dim})",
        )
        value(pca, "whiten", "index.pca.whiten", lambda v: isinstance(v, bool), "true or false")
        index_files.append(value(pca, "file", "index.pca.file", text, "a file name"))
    else:
        need(search_dim == dim, "index.dim", f"the model's dim ({dim}) when there is no PCA")
    if index.get("rescore") is not None:
        rescore = obj(index, "rescore", "index.rescore")
        value(rescore, "dtype", "index.rescore.dtype", lambda v: v == "float16", '"float16"')
        index_files.append(value(rescore, "file", "index.rescore.file", text, "a file name"))
    value(manifest, "place_count", "place_count", positive, "a positive integer")
    value(manifest, "dim", "dim", lambda v: v == dim, f"the model's dim ({dim})")
    value(
        manifest,
        "sources",
        "sources",
        lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v),
        "a list of objects",
    )
    if NULL_KEY in manifest:
        value(
            manifest,
            NULL_KEY,
            NULL_KEY,
            lambda v: isinstance(v, list) and len(v) >= 3 and all(map(_is_number, v))
            and v == sorted(v),
            "3 or more ascending numbers",
        )
    files = obj(manifest, "files", "files")
    for name in (*REQUIRED_FILES, *index_files):
        need(name in files, f"files.{name}", "present")
    for name, digest in files.items():
        need(
            isinstance(name, str) and _is_relative_file(name),
            f"files.{name}",
            "a path inside the map directory",
        )
        need(
            isinstance(digest, str) and _SHA256.fullmatch(digest) is not None,
            f"files.{name}",
            "a sha256 hex digest",
        )


def _iso_time(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    mf = path / MANIFEST
    if not path.exists():
        raise MapNotFoundError(
            f"no map at {path}: build one with `vpr-ros build-map --out {path} ...` or fix the map"
            " path"
        )
    if not mf.is_file():
        raise MapNotFoundError(
            f"{path} is not a vpr_ros map (no {MANIFEST}); point the map path at a directory"
            " written by `vpr-ros build-map`"
        )
    try:
        manifest = json.loads(mf.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise MapManifestError(
            f"{mf} is not valid JSON ({e}); the map is damaged: {_rebuild(path)}"
        ) from None
    except OSError as e:
        raise MapManifestError(f"{mf} cannot be read ({e}); {_rebuild(path)}") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not _is_int(manifest.get("format_version"))
    ):
        raise MapManifestError(
            f"{mf} is not a vpr_ros map manifest (no format {FORMAT!r} with an integer"
            f" format_version); {_rebuild(path)}"
        )
    if manifest["format_version"] > FORMAT_VERSION:
        raise MapError(
            f"{path} has map format {manifest['format_version']}, newer than this vpr_ros reads"
            f" ({FORMAT_VERSION}); upgrade vpr_ros"
        )
    if manifest["format_version"] < FORMAT_VERSION:
        raise MapError(
            f"{path} has old map format {manifest['format_version']} (this vpr_ros reads"
            f" {FORMAT_VERSION}, which checksums and validates the manifest): {_rebuild(path)}"
        )
    if manifest.get(MANIFEST_CHECKSUM) != manifest_checksum(manifest):
        raise MapManifestError(
            f"{mf} was altered: its content does not match its {MANIFEST_CHECKSUM};"
            f" {_rebuild(path)}"
        )
    validate_manifest(manifest, mf)
    return manifest


def verify_files(path: str | Path, manifest: dict) -> list[str]:
    """
    Problems found comparing files with the manifest's checksums.

    Empty when the map verifies.
    """
    path = Path(path)
    problems = []
    for name, digest in manifest["files"].items():
        f = path / name
        if not f.is_file():
            problems.append(f"{name} is missing")
        elif file_sha256(f) != digest:
            problems.append(f"{name} was altered (sha256 differs from the manifest)")
    return problems


def model_differences(map_model: dict, running: dict) -> list[str]:
    keys = ("name", "fingerprint", "input_size", "dim", "preprocessing")
    return [
        f"{k}: map has {map_model.get(k)!r}, running extractor has {running.get(k)!r}"
        for k in keys
        if map_model.get(k) != running.get(k)
    ]


@contextlib.contextmanager
def _reading(path: Path, name: str) -> Iterator[None]:
    """Any failure while reading ``name`` means the file is damaged: say so, naming it."""
    try:
        yield
    except MapError:
        raise
    except Exception as e:  # numpy, csv and faiss each raise their own types for a bad file
        raise MapIntegrityError(
            f"map {path}: {name} cannot be read ({type(e).__name__}: {e}); {_rebuild(path)}"
        ) from None


def _consistent(ok: bool, path: Path, problem: str) -> None:
    if not ok:
        raise MapIntegrityError(f"map {path}: {problem}; {_rebuild(path)}")


def load_map(path: str | Path, expected_model: dict | None = None, verify: bool = True) -> VprMap:
    """
    Load and check a map, all or nothing.

    ``expected_model`` is the running extractor's ``describe()``.

    ``verify`` checks every file's sha256 (slow for huge maps); without it, structure and
    counts are still checked, so a truncated or foreign file is refused all the same.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if verify and (problems := verify_files(path, manifest)):
        raise MapIntegrityError(
            f"map {path} does not verify: {'; '.join(problems)}. {_rebuild(path)}"
        )
    if expected_model is not None and (
        diff := model_differences(manifest["model"], expected_model)
    ):
        raise MapModelMismatchError(
            f"map {path} was built with another model or weights ({'; '.join(diff)}). Run with the"
            f" map's model ({manifest['model'].get('name')}) and the same weights, or rebuild the"
            " map with the current model"
        )
    n, dim = manifest["place_count"], manifest["dim"]
    with _reading(path, DESCRIPTORS_FILE):
        descriptors = np.load(path / DESCRIPTORS_FILE, mmap_mode="r", allow_pickle=False)
    _consistent(
        isinstance(descriptors, np.ndarray)
        and descriptors.dtype == np.float32
        and descriptors.shape == (n, dim),
        path,
        f"{DESCRIPTORS_FILE} holds {getattr(descriptors, 'dtype', '?')}"
        f" {getattr(descriptors, 'shape', '?')}, the manifest says float32 ({n}, {dim})",
    )
    with _reading(path, PLACES_FILE):
        places = read_places(path / PLACES_FILE)
    _consistent(
        len(places) == n, path, f"{PLACES_FILE} has {len(places)} places, the manifest says {n}"
    )
    _consistent(
        bool(np.array_equal(places.place_ids, np.arange(n))),
        path,
        f"{PLACES_FILE} place ids are not 0..{n - 1} in order",
    )
    kind, search_dim = manifest["index"]["type"], manifest["index"]["dim"]
    with _reading(path, INDEX_FILE):
        index = PlaceIndex.load(path, manifest["index"], dim)
    raw = index.index
    _consistent(
        isinstance(raw, FAISS_CLASSES[kind]) and raw.metric_type == faiss.METRIC_INNER_PRODUCT,
        path,
        f"{INDEX_FILE} is a {type(raw).__name__} (metric {raw.metric_type}), the manifest says"
        f" {kind} (inner product)",
    )
    _consistent(
        raw.ntotal == n and raw.d == search_dim,
        path,
        f"{INDEX_FILE} holds {raw.ntotal} vectors of {raw.d}-D, the manifest says {n} of"
        f" {search_dim}-D",
    )
    return VprMap(path, manifest, places, descriptors, index)


def rebuild_index(path: str | Path, index_config: IndexConfig) -> Path:
    """
    Rebuild a map's index (and PCA) from its stored descriptors, without re-extracting.

    Atomic like every map write, so the map at ``path`` is replaced only when the new one is
    complete.
    """
    m = load_map(path)
    path = Path(path)
    kept = {
        name: digest
        for name, digest in m.manifest["files"].items()
        if name.startswith(LOCAL_PREFIX)
    }
    with write_errors(path, 2 * m.descriptors.nbytes), atomic_directory(path) as tmp:
        if kept:  # local features stay with the places they describe
            shutil.copytree(path / LOCAL_PREFIX, tmp / LOCAL_PREFIX)
        write_map_into(
            tmp, path, m.descriptors, m.places, m.model, index_config, m.manifest["sources"], kept
        )
    return path
