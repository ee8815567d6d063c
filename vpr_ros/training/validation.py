"""
Recall@1 on held-apart places: each place's first image is the database, its last image the query.

For Nordland-style traversals that is the first folder (summer) against the last (winter); for
bags, the first recording against the last. Positives: places within ``radius_m`` where places
have positions, else the same place (and, along a route, its ``route_tolerance`` neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vpr_ros.evaluation.recall import (
    positives_by_distance,
    positives_by_frame,
    rank_database,
    recall_at_n,
)
from vpr_ros.models.spec import ModelSpec
from vpr_ros.training.datasets import PlaceSet
from vpr_ros.training.sampling import preprocess_images

DEFAULT_RADIUS_M = 25.0  # as `vpr-ros eval --threshold-m`


@dataclass
class ValidationSet:
    places: PlaceSet
    database: np.ndarray  # image indices, one per place
    queries: np.ndarray  # image indices, one per place with >= 2 images
    positives: list[np.ndarray]  # database rows that count as right, per query


def validation_set(
    places: PlaceSet, radius_m: float = DEFAULT_RADIUS_M, route_tolerance: int = 1
) -> ValidationSet:
    query_places = np.array([p for p, members in enumerate(places.places) if len(members) >= 2])
    database = np.array([members[0] for members in places.places])
    queries = np.array([places.places[p][-1] for p in query_places], dtype=np.int64)
    if places.place_xy is not None:
        positives = positives_by_distance(
            places.place_xy[query_places] - places.place_xy.mean(0),
            places.place_xy - places.place_xy.mean(0),
            radius_m,
        )
    else:
        tolerance = route_tolerance if places.ordered else 0
        positives = positives_by_frame(query_places, np.arange(len(places)), tolerance)
    return ValidationSet(places, database, queries, positives)


@torch.no_grad()
def describe(
    model: nn.Module,
    places: PlaceSet,
    indices: np.ndarray,
    spec: ModelSpec,
    device: torch.device,
    batch_size: int = 32,
) -> np.ndarray:
    """Descriptors of the given images, in eval mode (mixed precision on CUDA)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(indices), batch_size):
            x = preprocess_images(places, indices[start:start + batch_size], spec).to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                out.append(model(x).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, spec.dim), np.float32)


def recall_at_1(
    model: nn.Module,
    val: ValidationSet,
    spec: ModelSpec,
    device: torch.device,
    batch_size: int = 32,
) -> float:
    if len(val.queries) == 0:
        return float("nan")
    db = describe(model, val.places, val.database, spec, device, batch_size)
    q = describe(model, val.places, val.queries, spec, device, batch_size)
    return recall_at_n(rank_database(q, db, 1), val.positives, (1,))[1]
