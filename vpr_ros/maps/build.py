"""Build a map: frames from a source -> descriptors -> map directory (atomically)."""

from __future__ import annotations

import logging
import math
import queue
import threading
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from vpr_ros.errors import PoseError, VprError
from vpr_ros.fileio import atomic_directory
from vpr_ros.index.faiss_index import IndexConfig
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.inference.preprocess import preprocess
from vpr_ros.index.rerank import Reranker
from vpr_ros.maps.local_features import LocalFeatureWriter
from vpr_ros.maps.mapdir import write_errors, write_map_into
from vpr_ros.maps.places import Place

log = logging.getLogger(__name__)


def _prefetch(items: Iterable, depth: int = 16) -> Iterator:
    """Iterate ``items`` on a background thread so decoding overlaps inference."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)
        q.put(done)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _place(i: int, frame) -> Place:
    nan = math.nan
    x, y, z = frame.position if frame.position is not None else (nan, nan, nan)
    qx, qy, qz, qw = frame.orientation if frame.orientation is not None else (nan, nan, nan, nan)
    lat, lon = frame.latlon if frame.latlon is not None else (nan, nan)
    return Place(
        i,
        int(frame.stamp_ns),
        float(x),
        float(y),
        float(z),
        float(qx),
        float(qy),
        float(qz),
        float(qw),
        float(lat),
        float(lon),
        frame.utm_zone or "",
        str(frame.source),
        frame.topic or "",
    )


def extract_frames(
    frames: Iterable,
    extractor: DescriptorExtractor,
    batch_size: int = 8,
    total: int | None = None,
    desc: str = "extracting",
) -> tuple[np.ndarray, list]:
    """
    Descriptors for every frame, in batches, with a progress bar.

    Returns (descriptors, frames).
    """
    descriptors, kept, batch, batch_frames = [], [], [], []
    spec = extractor.spec

    def flush():
        descriptors.append(extractor.extract_preprocessed(np.stack(batch)))
        kept.extend(batch_frames)
        batch.clear()
        batch_frames.clear()

    with tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True) as bar:
        for frame in _prefetch((f, preprocess(f.image, spec)) for f in frames):
            f, x = frame
            f.image = None  # the descriptor is all we keep; bounded memory on long bags
            batch.append(x)
            batch_frames.append(f)
            if len(batch) == batch_size:
                flush()
            bar.update(1)
        if batch:
            flush()
    dim = extractor.dim
    return (np.concatenate(descriptors) if descriptors else np.zeros((0, dim), np.float32)), kept


def build_map(
    source,
    extractor: DescriptorExtractor,
    out: str | Path,
    index_config: IndexConfig | None = None,
    batch_size: int = 8,
    allow_no_poses: bool = False,
    reranker: Reranker | None = None,
) -> Path:
    """
    Extract every frame of ``source`` and write the map to ``out`` (replacing it only on success).

    Unreadable frames and impossible poses were already skipped and counted by the source (its
    ``stats``). A map in which no place has a position is refused with PoseError unless
    ``allow_no_poses``: such a map can match but never localize, which a user must ask for.
    With ``reranker``, its local features of every place go to the map's ``local/``, streamed to
    disk as they are extracted. The temporary directory is opened first, which also frees what
    killed builds of this map left (``atomic_directory``) before the long extraction.
    """
    out = Path(out)
    with write_errors(out, 0), atomic_directory(out) as tmp:
        if reranker is None:
            descriptors, frames = extract_frames(
                source, extractor, batch_size, total=len(source), desc="building map"
            )
            local_files = {}
        else:
            with LocalFeatureWriter(tmp, reranker.describe()) as writer:
                descriptors, frames = _extract_with_local(
                    source, extractor, reranker, writer, batch_size
                )
            local_files = writer.files
        places = _checked_places(source, frames, allow_no_poses)
        sources = source.describe() if hasattr(source, "describe") else [{"source": str(source)}]
        write_map_into(
            tmp,
            out,
            descriptors,
            places,
            extractor.describe(),
            index_config or IndexConfig(),
            sources,
            local_files,
        )
    log.info(
        "wrote map %s with %d places%s",
        out,
        len(places),
        f" and {reranker.name} local features" if reranker else "",
    )
    return out


def _extract_with_local(
    source,
    extractor: DescriptorExtractor,
    reranker: Reranker,
    writer: LocalFeatureWriter,
    batch_size: int,
) -> tuple[np.ndarray, list]:
    """
    Global descriptors and the re-ranker's local features, batch by batch.

    Features go straight to ``writer``.
    """
    descriptors, kept, batch = [], [], []

    def flush():
        d, features = reranker.extract_map([f.image for f in batch], extractor)
        for f, lf in zip(batch, features):
            writer.append(lf)
            f.image = None
        descriptors.append(d)
        kept.extend(batch)
        batch.clear()

    for frame in tqdm(
        source,
        total=len(source),
        desc=f"building map + {reranker.name} features",
        unit="img",
        dynamic_ncols=True,
    ):
        batch.append(frame)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return (
        np.concatenate(descriptors) if descriptors else np.zeros((0, extractor.dim), np.float32)
    ), kept


def _checked_places(source, frames: list, allow_no_poses: bool) -> list[Place]:
    stats = getattr(source, "stats", None)
    skipped = f" Skipped while reading:\n{stats.report()}" if stats is not None else ""
    if not frames:
        raise VprError(f"no usable frame in {_sources_text(source)}: nothing to build a map from; "
                       f"check the image topic and the recording.{skipped}")
    if not allow_no_poses and all(f.position is None for f in frames):
        raise PoseError(
            f"none of the {len(frames)} frames of {_sources_text(source)} has a usable position,"
            " so the map could never localize: give a pose source (--pose-topic with fixes,"
            " --poses-csv, or VPR-layout file names), or pass --allow-no-poses to build a map"
            f" that only matches places.{skipped}"
        )
    return [_place(i, f) for i, f in enumerate(frames)]


def _sources_text(source) -> str:
    described = source.describe() if hasattr(source, "describe") else [{"source": str(source)}]
    return ", ".join(str(d.get("source")) for d in described)
