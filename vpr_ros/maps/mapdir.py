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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
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
INDEX_PARAMS = {  # the parameters each index type needs
    "flat": (),
    "hnsw": ("M", "efConstruction", "efSearch", "rescore"),
    "ivfpq": ("nlist", "m", "nbits", "nprobe", "rescore"),
}


def _rebuild(path: Path) -> str:
    return f"rebuild it with `vpr-ros build-map --out {path} ...` (or restore it from a backup)"


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and np.isfinite(v)


def _iso_time(v: Any) -> bool:
    try:
        return isinstance(v, str) and dt.datetime.fromisoformat(v) is not None
    except ValueError:
        return False


def _is_relative_file(name: Any) -> bool:
    if not isinstance(name, str) or not name:
        return False
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and "\\" not in name


# (test, what it must be) for ``_Object.get``
TEXT = (lambda v: isinstance(v, str) and v != "", "a non-empty string")
POSITIVE = (lambda v: _is_int(v) and v > 0, "a positive integer")
PIXELS = (lambda v: isinstance(v, list) and len(v) == 2 and all(map(POSITIVE[0], v)),
          "[height, width] in positive pixels")
RGB = (lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_number, v)),
       "3 numbers (one per RGB channel)")
ASCENDING = (lambda v: isinstance(v, list) and len(v) >= 3 and all(map(_is_number, v))
             and v == sorted(v), "3 or more ascending numbers")


def _equal(want: Any, text: str) -> tuple:
    return (lambda v: v == want, text)


class _Object:
    """One JSON object of the manifest being parsed; ``field`` (``model.pca``) names it."""

    def __init__(self, value: Any, where: Path, field: str = ""):
        self.value, self.where, self.prefix = value, where, f"{field}." if field else ""
        self.need(isinstance(value, dict), field or "(top level)", "an object")

    def need(self, ok: Any, field: str, want: str) -> None:
        if not ok:
            raise MapManifestError(
                f"{self.where}: field {field!r} must be {want}; the manifest is damaged:"
                f" {_rebuild(self.where.parent)}"
            )

    def get(self, key: str, test: tuple) -> Any:
        """Return the value at ``key``: MapManifestError unless it is present and passes."""
        self.need(key in self.value, self.prefix + key, "present")
        self.need(test[0](self.value[key]), self.prefix + key, test[1])
        return self.value[key]

    def object(self, key: str, optional: bool = False) -> _Object | None:
        """Return the object at ``key``; None for an optional one that is absent or null."""
        if optional and self.value.get(key) is None:
            return None
        self.need(key in self.value, self.prefix + key, "present")
        return _Object(self.value[key], self.where, self.prefix + key)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input."""

    resize: tuple[int, int]  # [height, width] the image is resized to
    mean: tuple[float, float, float]  # subtracted per RGB channel (after scaling to 0..1)
    std: tuple[float, float, float]  # divided by per RGB channel


@dataclass(frozen=True)
class ModelInfo:
    """The model that described the places: a query must be described by the same one."""

    name: str  # registered model name (vpr_ros.models)
    fingerprint: str  # sha256 of its weights (or of the model's definition without weights)
    input_size: tuple[int, int]  # [height, width] of its input
    dim: int  # descriptor dims
    preprocessing: Preprocessing

    @classmethod
    def parse(cls, o: _Object) -> ModelInfo:
        pre = o.object("preprocessing")
        return cls(o.get("name", TEXT), o.get("fingerprint", TEXT),
                   tuple(o.get("input_size", PIXELS)), o.get("dim", POSITIVE),
                   Preprocessing(tuple(pre.get("resize", PIXELS)), tuple(pre.get("mean", RGB)),
                                 tuple(pre.get("std", RGB))))


@dataclass(frozen=True)
class PcaInfo:
    """The PCA that projects descriptors into the search space (``vpr_ros.search.pca``)."""

    file: str  # its file in the map directory
    input_dim: int  # the model's dims
    output_dim: int  # the search space's dims
    whiten: bool  # components scaled to unit variance
    explained_variance: float  # share of the descriptors' variance kept


@dataclass(frozen=True)
class RescoreInfo:
    """The search-space vectors that re-score an approximate index's shortlists."""

    file: str  # its file in the map directory
    dtype: str  # always "float16"


@dataclass(frozen=True)
class IndexInfo:
    """The search index over the places (``vpr_ros.search.faiss_index.PlaceIndex``)."""

    type: str  # flat, hnsw or ivfpq
    params: dict  # its parameters (INDEX_PARAMS), e.g. {"M": 32, "efSearch": 256, ...}
    dim: int  # dims of the search space: the model's, or the PCA's output
    pca: PcaInfo | None  # None: no PCA
    rescore: RescoreInfo | None  # None: the index's own scores are final

    @classmethod
    def parse(cls, o: _Object, dim: int) -> IndexInfo:
        kind = o.get("type", (lambda v: isinstance(v, str) and v in INDEX_PARAMS,
                              f"one of {', '.join(INDEX_PARAMS)}"))
        params = o.object("params")
        for name in INDEX_PARAMS[kind]:
            params.get(name, (POSITIVE[0], f"a positive integer (index type {kind})"))
        search_dim = o.get("dim", POSITIVE)
        pca = o.object("pca", optional=True)
        if pca is None:
            o.need(search_dim == dim, "index.dim", f"the model's dim ({dim}) when there is no PCA")
        rescore = o.object("rescore", optional=True)
        return cls(
            kind, params.value, search_dim, pca and PcaInfo(
                pca.get("file", (TEXT[0], "a file name")),
                pca.get("input_dim", _equal(dim, f"the model's dim ({dim})")),
                pca.get("output_dim", _equal(search_dim, f"index.dim ({search_dim})")),
                pca.get("whiten", (lambda v: isinstance(v, bool), "true or false")),
                pca.get("explained_variance", (_is_number, "a number")),
            ),
            rescore and RescoreInfo(
                rescore.get("file", (TEXT[0], "a file name")),
                rescore.get("dtype", _equal("float16", '"float16"')),
            ),
        )

    def config(self) -> IndexConfig:
        """Return the index type, parameters and PCA settings it was built with."""
        pca = self.pca
        return IndexConfig(self.type, dict(self.params), pca and pca.output_dim,
                           bool(pca and pca.whiten))


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about its map; ``to_dict()`` is what it holds."""

    map_id: str  # unique id of this map (a new one for each write)
    created: str  # ISO 8601 time of the write
    model: ModelInfo
    index: IndexInfo
    place_count: int  # places (rows of places.csv, descriptors.npy and the index)
    dim: int  # the model's descriptor dims
    sources: tuple[dict, ...]  # descriptive entries of the bags and folders read (free form)
    null_similarity: tuple[float, ...] | None  # quantiles of vpr_ros.on_map.NullSimilarity
    files: dict[str, str]  # {path relative to the map directory: sha256} of every map file
    checksum: str  # manifest_sha256: sha256 of the rest as canonical JSON

    @classmethod
    def parse(cls, data: Any, where: Path) -> Manifest:
        """
        Check types and ranges of every field the loader uses and return the typed value.

        ``where``: the manifest's path, for messages. MapManifestError names the first bad field.
        """
        o = _Object(data, where)
        o.get("format", _equal(FORMAT, repr(FORMAT)))
        o.get("format_version", _equal(FORMAT_VERSION, str(FORMAT_VERSION)))
        checksum = o.get(MANIFEST_CHECKSUM, (lambda v: isinstance(v, str) and _SHA256.fullmatch(v),
                                             "a sha256 hex digest"))
        map_id, created = o.get("map_id", TEXT), o.get("created", (_iso_time, "an ISO 8601 time"))
        model = ModelInfo.parse(o.object("model"))
        index = IndexInfo.parse(o.object("index"), model.dim)
        place_count = o.get("place_count", POSITIVE)
        o.get("dim", _equal(model.dim, f"the model's dim ({model.dim})"))
        sources = o.get("sources", (lambda v: isinstance(v, list)
                                    and all(isinstance(s, dict) for s in v), "a list of objects"))
        null = o.get(NULL_KEY, ASCENDING) if NULL_KEY in data else None
        files = o.object("files")
        for name in (*REQUIRED_FILES, *(part.file for part in (index.pca, index.rescore) if part)):
            o.need(name in files.value, f"files.{name}", "present")
        for name, digest in files.value.items():
            o.need(_is_relative_file(name), f"files.{name}", "a path inside the map directory")
            o.need(isinstance(digest, str) and _SHA256.fullmatch(digest) is not None,
                   f"files.{name}", "a sha256 hex digest")
        return cls(map_id, created, model, index, place_count, model.dim, tuple(sources),
                   None if null is None else tuple(null), files.value, checksum)

    def to_dict(self) -> dict:
        """Return the manifest as JSON values, keys in the order ``manifest.json`` holds them."""
        # through JSON: tuples become lists, as json.loads reads them back
        out = {"format": FORMAT, "format_version": FORMAT_VERSION,
               **json.loads(json.dumps(asdict(self)))}
        if out[NULL_KEY] is None:
            del out[NULL_KEY]
        out[MANIFEST_CHECKSUM] = out.pop("checksum")
        return out


def manifest_checksum(manifest: dict) -> str:
    """Return the sha256 of the manifest's body (every key but the checksum) as canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def with_checksum(manifest: dict) -> dict:
    """Return ``manifest`` with its checksum."""
    return {**manifest, MANIFEST_CHECKSUM: manifest_checksum(manifest)}


def read_manifest(path: str | Path) -> Manifest:
    """Read, checksum and parse the manifest of the map at ``path``."""
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
        data = json.loads(mf.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise MapManifestError(
            f"{mf} is not valid JSON ({e}); the map is damaged: {_rebuild(path)}"
        ) from None
    except OSError as e:
        raise MapManifestError(f"{mf} cannot be read ({e}); {_rebuild(path)}") from None
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or not _is_int(version := data.get("format_version"))
    ):
        raise MapManifestError(
            f"{mf} is not a vpr_ros map manifest (no format {FORMAT!r} with an integer"
            f" format_version); {_rebuild(path)}"
        )
    if version > FORMAT_VERSION:
        raise MapError(
            f"{path} has map format {version}, newer than this vpr_ros reads"
            f" ({FORMAT_VERSION}); upgrade vpr_ros"
        )
    if version < FORMAT_VERSION:
        raise MapError(
            f"{path} has old map format {version} (this vpr_ros reads"
            f" {FORMAT_VERSION}, which checksums and validates the manifest): {_rebuild(path)}"
        )
    if data.get(MANIFEST_CHECKSUM) != manifest_checksum(data):
        raise MapManifestError(
            f"{mf} was altered: its content does not match its {MANIFEST_CHECKSUM};"
            f" {_rebuild(path)}"
        )
    return Manifest.parse(data, mf)


@dataclass
class VprMap:
    path: Path
    manifest: Manifest
    places: PlaceTable
    descriptors: np.ndarray
    index: PlaceIndex

    @property
    def map_id(self) -> str:
        return self.manifest.map_id

    @functools.cached_property
    def model(self) -> dict:
        """Return the map's model as the extractor's ``describe()`` gives it."""
        return self.manifest.to_dict()["model"]

    def __len__(self) -> int:
        return len(self.places)

    @functools.cached_property
    def null_similarity(self) -> NullSimilarity | None:
        """
        Return the map's null (``vpr_ros.on_map``): stored by the build, else computed here.

        None for a map too small to have places elsewhere.
        """
        if self.manifest.null_similarity is not None:
            return NullSimilarity(self.manifest.null_similarity)
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
            "sources": list(sources),
            **({NULL_KEY: null.to_manifest()} if null is not None else {}),
            "files": {
                **{
                    name: file_sha256(tmp / name)
                    for name in (DESCRIPTORS_FILE, PLACES_FILE, *index_files)
                },
                **(extra_files or {}),
            },
        }
        # parsed as the loader parses it: a writer bug must not produce a map that never loads
        manifest = Manifest.parse(with_checksum(manifest), tmp / MANIFEST).to_dict()
        (tmp / MANIFEST).write_text(json.dumps(with_checksum(manifest), indent=2) + "\n")


def verify_files(path: str | Path, manifest: Manifest) -> list[str]:
    """
    Problems found comparing files with the manifest's checksums.

    Empty when the map verifies.
    """
    path = Path(path)
    problems = []
    for name, digest in manifest.files.items():
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
        diff := model_differences(manifest.to_dict()["model"], expected_model)
    ):
        raise MapModelMismatchError(
            f"map {path} was built with another model or weights ({'; '.join(diff)}). Run with the"
            f" map's model ({manifest.model.name}) and the same weights, or rebuild the"
            " map with the current model"
        )
    n, dim = manifest.place_count, manifest.dim
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
    kind, search_dim = manifest.index.type, manifest.index.dim
    with _reading(path, INDEX_FILE):
        index = PlaceIndex.load(path, manifest.to_dict()["index"], dim)
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
        for name, digest in m.manifest.files.items()
        if name.startswith(LOCAL_PREFIX)
    }
    with write_errors(path, 2 * m.descriptors.nbytes), atomic_directory(path) as tmp:
        if kept:  # local features stay with the places they describe
            shutil.copytree(path / LOCAL_PREFIX, tmp / LOCAL_PREFIX)
        write_map_into(
            tmp, path, m.descriptors, m.places, m.model, index_config, m.manifest.sources, kept
        )
    return path
