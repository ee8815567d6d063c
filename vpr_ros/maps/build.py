"""Build a map: frames from a source -> descriptors -> map directory (atomically)."""

from __future__ import annotations

import logging
import math
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tqdm import tqdm

from vpr_ros.errors import ConfigError, PoseError, VprError
from vpr_ros.fileio import atomic_directory
from vpr_ros.search.faiss_index import IndexConfig
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.inference.batch import extract_frames, prefetch
from vpr_ros.rerank import Reranker
from vpr_ros.maps.local_features import FeatureSink, LocalFeatureStore, LocalFeatureWriter
from vpr_ros.maps.mapdir import VprMap, write_errors, write_map_into
from vpr_ros.maps.places import Place
from vpr_ros.maps.poses import UtmProjector, UtmZone
from vpr_ros.maps.sources import SourceStats

log = logging.getLogger(__name__)


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


@dataclass
class Shard:
    """
    What extracting one source gave: its descriptors and frames (images dropped), in order.

    ``stats``: what reading it skipped; ``sources``: its manifest entries. ``local_features``: the
    re-ranker's features of each frame where a Ray worker gathered them to ship (``distributed``).
    """

    descriptors: np.ndarray
    frames: list
    stats: SourceStats
    sources: list[dict]
    local_features: list | None = None


# Yields the shards of a map in place order, given the map's local-feature sink (None without);
# each shard's local features are in the sink before the shard is yielded.
ShardProducer = Callable[[FeatureSink | None], Iterable[Shard]]


def in_process(
    source, extractor: DescriptorExtractor, batch_size: int = 8, reranker: Reranker | None = None
) -> ShardProducer:
    """Return the producer of one source extracted in this process (features streamed)."""
    return lambda sink: [extract_shard(source, extractor, batch_size, reranker, sink)]


def extract_shard(
    source,
    extractor: DescriptorExtractor,
    batch_size: int = 8,
    reranker: Reranker | None = None,
    sink: FeatureSink | None = None,
) -> Shard:
    """
    Extract every frame of ``source``.

    With ``reranker``, each frame's local features go to ``sink``, in frame order.
    """
    if reranker is None:
        descriptors, frames = extract_frames(
            source, extractor, batch_size, total=len(source), desc="building map"
        )
    else:
        descriptors, frames = _extract_with_local(source, extractor, reranker, sink, batch_size)
    stats = getattr(source, "stats", None) or SourceStats()
    return Shard(descriptors, frames, stats, describe_source(source))


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
    disk as they are extracted.
    """
    path, _ = write_shards(
        out,
        in_process(source, extractor, batch_size, reranker),
        extractor.describe(),
        index_config or IndexConfig(),
        allow_no_poses,
        reranker.describe() if reranker else None,
    )
    return path


def write_shards(
    out: str | Path,
    shards: ShardProducer,
    model: dict,
    index_config: IndexConfig,
    allow_no_poses: bool = False,
    local_description: dict | None = None,
    base: VprMap | None = None,
) -> tuple[Path, SourceStats]:
    """
    Write the map of ``base``'s places (if any) then every shard's, in order, to ``out``.

    One writer for a fresh build, a build on Ray workers and ``--append``: the temporary
    directory is opened first (which also frees what killed builds of this map left, before the
    long extraction), and ``out`` is replaced only when the whole map is written. With
    ``local_description`` (the re-ranker's ``describe()``) every place's local features go to
    ``local/``: ``base``'s first, copied, then the shards' as they come. With ``base`` the map's
    PCA is kept, so its places are not re-projected into another space. Returns the path and what
    reading the new sources skipped.
    """
    out = Path(out)
    with write_errors(out, 0), atomic_directory(out) as tmp:
        local_files: dict[str, str] = {}
        if local_description is None:
            new = list(shards(None))
        else:
            with LocalFeatureWriter(tmp, local_description) as writer:
                if base is not None:
                    store = LocalFeatureStore.open(base.path, local_description, len(base))
                    for place in range(len(store)):
                        writer.append(store[place])
                new = list(shards(writer))
            local_files = writer.files
        stats = _combined_stats([shard.stats for shard in new])
        sources = [entry for shard in new for entry in shard.sources]
        frames = [frame for shard in new for frame in shard.frames]
        old_places = list(base.places) if base is not None else []
        places = _checked_places(frames, stats, sources, allow_no_poses, len(old_places))
        if base is not None:
            _refuse_repeated_frames(base.path, old_places, places)
        held = [np.asarray(base.descriptors)] if base is not None else []
        descriptors = np.concatenate(held + [shard.descriptors for shard in new])
        write_map_into(
            tmp,
            out,
            descriptors,
            one_utm_zone(old_places + places),
            model,
            index_config,
            [*(base.manifest.sources if base is not None else ()), *sources],
            local_files,
            base.index.pca if base is not None else None,
        )
    log.info(
        "wrote map %s with %d places (%d new)%s",
        out,
        len(descriptors),
        len(places),
        f" and {local_description['reranker']} local features" if local_description else "",
    )
    return out, stats


def _combined_stats(stats: list[SourceStats]) -> SourceStats:
    total = SourceStats()
    for s in stats:
        total.yielded += s.yielded
        total.corrupt_skipped += s.corrupt_skipped
        total.without_pose += s.without_pose
        total.skipped.update(s.skipped)
    return total


def one_utm_zone(places: list[Place]) -> list[Place]:
    """
    Express every GPS position in the UTM zone of the map's first one.

    A single bag keeps its first fix's zone along the whole route (``UtmProjector``); bags read
    apart (by Ray workers, or appended later) each pick their own, so places of a bag that
    started across a zone border are projected again, from their latitude/longitude.
    """
    zone_name = next((p.utm_zone for p in places if p.utm_zone), "")
    if not zone_name:
        return places
    projector = UtmProjector(UtmZone(int(zone_name[:-1]), zone_name[-1]))
    unified = []
    for p in places:
        if p.utm_zone and p.utm_zone != zone_name and math.isfinite(p.lat + p.lon):
            x, y = projector.project(p.lat, p.lon)
            p = replace(p, x=x, y=y, utm_zone=zone_name)
        unified.append(p)
    return unified


def _refuse_repeated_frames(map_path: Path, old: list[Place], new: list[Place]) -> None:
    """
    Refuse frames the map already holds: the same recording under another path.

    A camera stamp (ns) on the same topic does not recur across recordings.
    """
    held = {(p.stamp_ns, p.topic) for p in old if p.stamp_ns}
    repeated = [p for p in new if p.stamp_ns and (p.stamp_ns, p.topic) in held]
    if repeated:
        raise ConfigError(
            f"{len(repeated)} of the {len(new)} new frames (first from {repeated[0].source},"
            f" {repeated[0].topic} at {repeated[0].stamp_ns} ns) are already in map {map_path}:"
            " the same recording was appended before, perhaps under another path. Leave it out"
            " of --bag, or rebuild the map from all bags without --append"
        )


def _extract_with_local(
    source,
    extractor: DescriptorExtractor,
    reranker: Reranker,
    sink: FeatureSink,
    batch_size: int,
) -> tuple[np.ndarray, list]:
    """Global descriptors, batch by batch; the re-ranker's local features go to ``sink``."""
    descriptors, kept, batch = [], [], []

    def flush():
        d, features = reranker.extract_map([f.image for f in batch], extractor)
        for f, lf in zip(batch, features):
            sink.append(lf)
            f.image = None
        descriptors.append(d)
        kept.extend(batch)
        batch.clear()

    with closing(prefetch(source)) as frames:  # reading and decoding overlap the extraction
        for frame in tqdm(
            frames,
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


def _checked_places(
    frames: list,
    stats: SourceStats,
    sources: list[dict],
    allow_no_poses: bool,
    first_id: int = 0,
) -> list[Place]:
    skipped = f" Skipped while reading:\n{stats.report()}"
    named = ", ".join(str(d.get("source")) for d in sources)
    if not frames:
        raise VprError(f"no usable frame in {named}: nothing to build a map from; "
                       f"check the image topic and the recording.{skipped}")
    if not allow_no_poses and all(f.position is None for f in frames):
        raise PoseError(
            f"none of the {len(frames)} frames of {named} has a usable position,"
            " so the map could never localize: give a pose source (--pose-topic with fixes,"
            " --poses-csv, or VPR-layout file names), or pass --allow-no-poses to build a map"
            f" that only matches places.{skipped}"
        )
    return [_place(first_id + i, f) for i, f in enumerate(frames)]


def describe_source(source) -> list[dict]:
    return source.describe() if hasattr(source, "describe") else [{"source": str(source)}]
