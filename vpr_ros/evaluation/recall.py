"""
Recall@N: the share of queries with at least one true place among their top N matches.

Ground truth is a list of arrays, one per query, holding the database indices
that count as correct; it comes from UTM positions within a radius or from
frame indices within a tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np


def rank_database(query: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """
    Exact inner-product search of L2-normalised descriptors.

    [Q, k] database indices, best first.
    """
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(np.ascontiguousarray(database, dtype=np.float32))
    _, ranked = index.search(np.ascontiguousarray(query, dtype=np.float32), min(k, len(database)))
    return ranked


def positives_by_distance(
    query_xy: np.ndarray, database_xy: np.ndarray, radius_m: float
) -> list[np.ndarray]:
    """Database places within ``radius_m`` metres (UTM easting/northing) of each query."""
    index = faiss.IndexFlatL2(database_xy.shape[1])
    index.add(np.ascontiguousarray(database_xy, dtype=np.float32))
    # faiss range search takes squared L2 radii and returns CSR-like (lims, ids).
    lims, _, ids = index.range_search(
        np.ascontiguousarray(query_xy, dtype=np.float32), radius_m**2
    )
    return [np.sort(ids[lims[i]:lims[i + 1]]) for i in range(len(query_xy))]


def positives_by_frame(
    query_frames: np.ndarray, database_frames: np.ndarray, tolerance: int
) -> list[np.ndarray]:
    """Database places whose frame index is within ``tolerance`` of the query's frame index."""
    order = np.argsort(database_frames, kind="stable")
    sorted_frames = np.asarray(database_frames)[order]
    lo = np.searchsorted(sorted_frames, np.asarray(query_frames) - tolerance, side="left")
    hi = np.searchsorted(sorted_frames, np.asarray(query_frames) + tolerance, side="right")
    return [np.sort(order[a:b]) for a, b in zip(lo, hi)]


def recall_at_n(
    ranked: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """
    Recall@N for each N in ``ns`` from ranked predictions [Q, K] (database indices, best first).

    N larger than K counts the K predictions there are.
    """
    ranked = np.asarray(ranked)
    if len(ranked) != len(positives):
        raise ValueError(
            f"{len(ranked)} rows of predictions but {len(positives)} ground-truth rows"
        )
    hits = np.array([np.isin(row, pos) for row, pos in zip(ranked, positives)]).reshape(
        ranked.shape
    )
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.int64).max)
    return {n: float(np.mean(first_hit < n)) for n in ns}
