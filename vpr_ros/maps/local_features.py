"""
The map's ``local/`` directory: every place's local features for re-ranking, packed.

    local/
      meta.json        format, re-ranker, dim, dtype, model fingerprint, place and row counts
      descriptors.bin  all places' rows back to back, raw [rows, dim] (float16, or uint8 as given)
      offsets.npy      [places + 1] int64: place i owns rows offsets[i]:offsets[i+1]
      keypoints.bin    optional raw [rows, 2] float32

Only the kept rows are stored (no padding to a fixed length), so a place costs
what it holds. Raw files rather than .npy let the writer stream place by place
(a city map does not fit in memory) without knowing the row count up front;
meta.json gives dtype and shape. Reading memory-maps the files: a place is
two offsets and a slice, O(1), and untouched places never leave the disk.

The writer writes into a map directory it is given (the temporary one of
``fileio.atomic_directory``) and returns the sha256 of every file, named
relative to the map directory, for the manifest's ``files``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from vpr_ros.errors import LocalFeaturesMissingError, MapIntegrityError, MapModelMismatchError
from vpr_ros.fileio import file_sha256
from vpr_ros.rerank.base import LocalFeatures

FORMAT = "vpr_ros/local_features"
FORMAT_VERSION = 1
LOCAL_DIR = "local"
META_FILE = "meta.json"
DESCRIPTORS_FILE = "descriptors.bin"
OFFSETS_FILE = "offsets.npy"
KEYPOINTS_FILE = "keypoints.bin"
# Fields of the re-ranker's describe() a store must match to be used by it.
CHECKED_FIELDS = ("reranker", "dim", "model_fingerprint")


def rebuild_hint(reranker: str) -> str:
    return (
        f"rebuild the map with local features: `vpr-ros build-map --rerank {reranker} --out MAP"
        " ...` (same model and weights)"
    )


def _storage_dtype(descriptors: np.ndarray) -> np.dtype:
    if descriptors.dtype == np.uint8:
        return np.dtype(np.uint8)  # binary / quantised features stay as they are
    if np.issubdtype(descriptors.dtype, np.floating):
        return np.dtype(np.float16)
    raise ValueError(f"local descriptors must be floating point or uint8, got {descriptors.dtype}")


class _HashedFile:
    """An append-only file that hashes what it writes (no second read of a multi-GB file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = open(path, "wb")
        self.sha256 = hashlib.sha256()

    def write(self, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array).tobytes()
        self.file.write(data)
        self.sha256.update(data)

    def close(self) -> None:
        self.file.close()


class LocalFeatureWriter:
    """
    Streams places' local features into ``<map_dir>/local/``.

    One place per ``append``, in place order. ``description`` is the re-ranker's ``describe()``
    (``reranker``, ``dim``, ``model_fingerprint``, ...). Use as a context manager, or call
    ``close()``, which writes the offsets and meta.json; then ``files`` (also close()'s result)
    is {path relative to map_dir: sha256} for the manifest. On an exception nothing is
    finalised: the caller's atomic directory is discarded anyway.
    """

    def __init__(self, map_dir: str | Path, description: dict) -> None:
        missing = [k for k in CHECKED_FIELDS if k not in description]
        if missing:
            raise ValueError(f"re-ranker description lacks {', '.join(missing)}: {description}")
        self.description = dict(description)
        self.dim = int(description["dim"])
        self.directory = Path(map_dir) / LOCAL_DIR
        self.directory.mkdir()
        self._descriptors = _HashedFile(self.directory / DESCRIPTORS_FILE)
        self._keypoints: _HashedFile | None = None
        self._offsets = [0]
        self._dtype: np.dtype | None = None
        self._has_keypoints: bool | None = None
        self.files: dict[str, str] = {}

    def append(self, features: LocalFeatures) -> None:
        d = features.descriptors
        if d.shape[1] != self.dim:
            raise ValueError(
                f"place {len(self._offsets) - 1}: local descriptors have dim {d.shape[1]}, the"
                f" re-ranker says {self.dim}"
            )
        dtype = _storage_dtype(d)
        has_keypoints = features.keypoints is not None
        if self._dtype is None:
            self._dtype, self._has_keypoints = dtype, has_keypoints
            if has_keypoints:
                self._keypoints = _HashedFile(self.directory / KEYPOINTS_FILE)
        elif dtype != self._dtype or has_keypoints != self._has_keypoints:
            raise ValueError(
                f"place {len(self._offsets) - 1}: local features of another kind than the first"
                f" place's (dtype {dtype} vs {self._dtype}, keypoints {has_keypoints} vs"
                f" {self._has_keypoints})"
            )
        with np.errstate(over="ignore"):  # overflow is reported below, by name
            rows = d.astype(dtype, copy=False)
        if dtype.kind == "f" and not np.isfinite(rows).all():
            raise ValueError(
                f"place {len(self._offsets) - 1}: local descriptors are not finite in float16 "
                "(NaN, or beyond +-65504): normalise or scale them before storing"
            )
        self._descriptors.write(rows)
        if self._keypoints is not None:
            self._keypoints.write(features.keypoints.astype(np.float32, copy=False))
        self._offsets.append(self._offsets[-1] + len(d))

    def close(self) -> dict[str, str]:
        if self.files:
            return self.files
        files = [self._descriptors] + ([self._keypoints] if self._keypoints else [])
        for f in files:
            f.close()
        offsets = np.asarray(self._offsets, dtype=np.int64)
        np.save(self.directory / OFFSETS_FILE, offsets)
        meta = {
            **self.description,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dtype": str(self._dtype or np.dtype(np.float16)),
            "places": len(offsets) - 1,
            "rows": int(offsets[-1]),
            "keypoints": bool(self._has_keypoints),
        }
        (self.directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        digests = {f.path.name: f.sha256.hexdigest() for f in files}
        for name in (OFFSETS_FILE, META_FILE):
            digests[name] = file_sha256(self.directory / name)
        self.files = {f"{LOCAL_DIR}/{name}": digest for name, digest in sorted(digests.items())}
        return self.files

    def __enter__(self) -> LocalFeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._descriptors.close()
            if self._keypoints:
                self._keypoints.close()


class FeatureSink(Protocol):
    """
    Where map building puts each place's local features, in place order.

    The map's ``LocalFeatureWriter``, or the list a Ray worker ships back with its shard.
    """

    def append(self, features: LocalFeatures) -> None:
        """Take the next place's features."""


def copy_first_places(map_dir: str | Path, places: int, into_dir: Path) -> dict[str, str]:
    """
    Write the first ``places`` places' local features of the map at ``map_dir`` into ``into_dir``.

    For a map made of a map's first places (``conditions.prefix_map``); {} where the map holds
    no local features, else the written files for the manifest (``LocalFeatureWriter.close``).
    """
    reranker = stored_reranker(map_dir)
    if reranker is None:
        return {}
    meta = LocalFeatureStore._read_meta(Path(map_dir) / LOCAL_DIR, reranker)
    store = LocalFeatureStore.open(map_dir, meta)
    # the re-ranker's describe(), without what the writer adds
    written = ("format", "format_version", "dtype", "places", "rows", "keypoints")
    description = {k: v for k, v in meta.items() if k not in written}
    with LocalFeatureWriter(into_dir, description) as writer:
        for place in range(places):
            writer.append(store[place])
    return writer.files


def resolve_rerank(rerank: str, map_dir: str | Path | None) -> str | None:
    """
    Name the re-ranker ``rerank`` (none | auto | a name) stands for at ``map_dir``; None for none.

    auto: the one whose local features the map holds (none where it holds none, or where there
    is no map yet). build-map, eval and the pipeline all resolve ``--rerank`` / ``rerank`` here.
    """
    if rerank == "auto":
        return stored_reranker(map_dir) if map_dir is not None else None
    return None if rerank == "none" else rerank


def stored_reranker(map_dir: str | Path) -> str | None:
    """Name of the re-ranker whose local features the map holds (None without any)."""
    try:
        meta = json.loads((Path(map_dir) / LOCAL_DIR / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return (
        meta.get("reranker")
        if isinstance(meta, dict) and isinstance(meta.get("reranker"), str)
        else None
    )


class LocalFeatureStore:
    """
    Memory-mapped local features of a map.

    ``store[place_id]`` -> LocalFeatures (views, no copy).
    """

    def __init__(
        self,
        directory: Path,
        meta: dict,
        descriptors: np.ndarray,
        offsets: np.ndarray,
        keypoints: np.ndarray | None,
    ):
        self.directory = directory
        self.meta = meta
        self.descriptors = descriptors
        self.offsets = offsets
        self.keypoints = keypoints

    @classmethod
    def open(
        cls, map_dir: str | Path, expected: dict, place_count: int | None = None
    ) -> LocalFeatureStore:
        """
        Open ``<map_dir>/local`` for the re-ranker described by ``expected`` (its ``describe()``).

        Raises LocalFeaturesMissingError (no local features), MapIntegrityError (damaged or
        inconsistent files) or MapModelMismatchError (features of another re-ranker, dim or model).
        Checksums are the manifest's job (``mapdir.verify_files``); this checks structure.
        """
        map_dir = Path(map_dir)
        directory = map_dir / LOCAL_DIR
        reranker = expected.get("reranker", "?")
        if not (directory / META_FILE).is_file():
            raise LocalFeaturesMissingError(
                f"map {map_dir} holds no local features, so re-ranker {reranker!r} cannot run; "
                f"{rebuild_hint(reranker)}, or run without re-ranking (rerank none)"
            )
        meta = cls._read_meta(directory, reranker)
        if diff := [f"{k}: map has {meta.get(k)!r}, running re-ranker has {expected.get(k)!r}"
                    for k in CHECKED_FIELDS if meta.get(k) != expected.get(k)]:
            raise MapModelMismatchError(
                f"local features in {directory} do not fit re-ranker {reranker!r}"
                f" ({'; '.join(diff)}); {rebuild_hint(reranker)}"
            )
        places, rows, dim, dtype = (
            meta["places"],
            meta["rows"],
            meta["dim"],
            np.dtype(meta["dtype"]),
        )
        if place_count is not None and places != place_count:
            raise MapIntegrityError(
                f"{directory} holds local features of {places} places, the map has {place_count};"
                f" {rebuild_hint(reranker)}"
            )
        try:
            offsets = np.load(directory / OFFSETS_FILE, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise MapIntegrityError(
                f"{directory / OFFSETS_FILE} is missing or unreadable ({e});"
                f" {rebuild_hint(reranker)}"
            ) from None
        if (
            offsets.dtype != np.int64
            or offsets.shape != (places + 1,)
            or offsets[0] != 0
            or offsets[-1] != rows
            or (np.diff(offsets) < 0).any()
        ):
            raise MapIntegrityError(
                f"{directory / OFFSETS_FILE} is not a valid offsets table for {places} places and"
                f" {rows} rows; {rebuild_hint(reranker)}"
            )
        descriptors = cls._map_rows(directory / DESCRIPTORS_FILE, dtype, (rows, dim), reranker)
        keypoints = (
            cls._map_rows(directory / KEYPOINTS_FILE, np.dtype(np.float32), (rows, 2), reranker)
            if meta["keypoints"]
            else None
        )
        return cls(directory, meta, descriptors, offsets, keypoints)

    @staticmethod
    def _read_meta(directory: Path, reranker: str) -> dict:
        path = directory / META_FILE
        try:
            meta = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MapIntegrityError(
                f"{path} is not valid JSON ({e}); {rebuild_hint(reranker)}"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise MapIntegrityError(
                f"{path} is not a vpr_ros local-feature description; {rebuild_hint(reranker)}"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise MapIntegrityError(
                f"{path} has local-feature format {meta.get('format_version')}, this vpr_ros reads"
                f" {FORMAT_VERSION}; {rebuild_hint(reranker)}"
            )
        for key, kind in (
            ("places", int),
            ("rows", int),
            ("dim", int),
            ("dtype", str),
            ("keypoints", bool),
        ):
            if not isinstance(meta.get(key), kind) or (kind is int and meta[key] < 0):
                raise MapIntegrityError(
                    f"{path}: field {key!r} is missing or invalid ({meta.get(key)!r});"
                    f" {rebuild_hint(reranker)}"
                )
        if meta["dtype"] not in ("float16", "uint8"):
            raise MapIntegrityError(
                f"{path}: unsupported dtype {meta['dtype']!r}; {rebuild_hint(reranker)}"
            )
        return meta

    @staticmethod
    def _map_rows(
        path: Path, dtype: np.dtype, shape: tuple[int, int], reranker: str
    ) -> np.ndarray:
        expected = shape[0] * shape[1] * dtype.itemsize
        size = path.stat().st_size if path.is_file() else None
        if size != expected:
            found = "it is missing" if size is None else f"it has {size}"
            raise MapIntegrityError(
                f"{path} should hold {expected} bytes ({shape[0]} rows x {shape[1]} {dtype}),"
                f" {found}; {rebuild_hint(reranker)}"
            )
        if expected == 0:  # np.memmap refuses empty files
            return np.zeros(shape, dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, place_id: int) -> LocalFeatures:
        if not 0 <= place_id < len(self):
            raise IndexError(
                f"place {place_id} is outside the local-feature store of {len(self)} places"
            )
        start, end = int(self.offsets[place_id]), int(self.offsets[place_id + 1])
        keypoints = self.keypoints[start:end] if self.keypoints is not None else None
        return LocalFeatures(self.descriptors[start:end], keypoints)

    @property
    def bytes_per_place(self) -> float:
        """
        Mean bytes a place costs on disk.

        Its rows, keypoints and offsets entry (meta.json excluded).
        """
        total = (
            self.descriptors.nbytes
            + self.offsets.nbytes
            + (self.keypoints.nbytes if self.keypoints is not None else 0)
        )
        return total / max(len(self), 1)
