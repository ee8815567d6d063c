"""
Grow an existing map with new bags or image folders (``vpr-ros build-map --append``).

Only the new frames are extracted. The map's places, descriptors and local features are kept as
they are, and so is its search space: the new descriptors are projected with the map's stored
PCA (not a PCA learned again, which would move every old place) and the index is rebuilt over
old and new places with the map's index type and parameters (``vpr-ros build-index`` re-chooses
them). The grown map is written beside the old one and replaces it in one step, so a failure at
any point leaves the old map as it was.
"""

from __future__ import annotations

from pathlib import Path

from vpr_ros.errors import ConfigError, MapModelMismatchError
from vpr_ros.maps.build import ShardProducer, write_shards
from vpr_ros.maps.local_features import stored_reranker
from vpr_ros.maps.mapdir import VprMap, load_map, model_differences
from vpr_ros.maps.sources import SourceStats


def append_to_map(
    path: str | Path,
    shards: ShardProducer,
    model: dict,
    new_sources: list[dict],
    allow_no_poses: bool = False,
    local_description: dict | None = None,
) -> tuple[Path, SourceStats]:
    """
    Add the places of ``shards`` (extracted with ``model``) to the map at ``path``.

    ``new_sources``: the manifest entries of what ``shards`` reads, checked against the map's
    before anything is extracted. ``local_description``: the re-ranker's ``describe()``, needed
    exactly when the map holds local features (``stored_reranker``). Returns the path and what
    reading the new sources skipped.
    """
    base = map_to_grow(path, model, new_sources)
    held = stored_reranker(path)
    given = local_description["reranker"] if local_description else None
    if held != given:
        raise ConfigError(
            f"map {path} holds {held or 'no'} local features, the new places would have"
            f" {given or 'none'}: every place needs the same; append with --rerank"
            f" {held or 'none'}, or rebuild the map from all bags without --append"
        )
    return write_shards(
        path, shards, base.model, base.manifest.index.config(), allow_no_poses, local_description,
        base,
    )


def map_to_grow(path: str | Path, model: dict, new_sources: list[dict]) -> VprMap:
    """
    Load and verify the map at ``path``; refuse another model or a source it already holds.

    MapModelMismatchError when ``model`` (the running extractor's ``describe()``) is not the
    map's; ConfigError when a new source's path is one of the map's sources.
    """
    base = load_map(path)
    if diff := model_differences(base.model, model):
        raise MapModelMismatchError(
            f"cannot append to map {path}: it was built with another model or weights"
            f" ({'; '.join(diff)}). Append with the map's model ({base.model['name']}, same"
            " weights file: leave --model out to use it), or build a new map with this model"
        )
    held = {_resolved(s.get("source")): i for i, s in enumerate(base.manifest.sources)}
    for entry in new_sources:
        if (i := held.get(_resolved(entry.get("source")))) is not None:
            raise ConfigError(
                f"{entry['source']} is already in map {path} (its source {i + 1} of"
                f" {len(held)}): leave it out of --bag/--images, or rebuild the map from all bags"
                " without --append to change how it is read"
            )
    return base


def _resolved(source) -> Path | None:
    return Path(str(source)).expanduser().resolve() if source else None
