"""Nearest-place search over L2-normalised descriptors with faiss (inner product = cosine).

Three index types:
  flat   exact search; right up to tens of thousands of places.
  hnsw   graph search; ~100x faster than exact at 100k places with recall@1 ~0.98.
  ivfpq  compressed; its shortlist is re-scored exactly against descriptors.npy,
         because PQ distances alone lose recall.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

INDEX_TYPES = ("auto", "flat", "hnsw", "ivfpq")
DEFAULT_PARAMS = {
    "hnsw": {"M": 32, "efConstruction": 80, "efSearch": 64},
    "ivfpq": {"nlist": 0, "m": 0, "nbits": 8, "nprobe": 16, "rescore": 64},  # 0 = chosen from size
}
AUTO_HNSW_ABOVE = 50_000  # exact search stays under ~10 ms per query below this


@dataclass
class IndexConfig:
    type: str = "auto"
    params: dict = field(default_factory=dict)

    def resolved(self, n: int, dim: int) -> "IndexConfig":
        kind = self.type
        if kind not in INDEX_TYPES:
            raise ValueError(f"unknown index type {kind!r}; choose one of {', '.join(INDEX_TYPES)}")
        if kind == "auto":
            kind = "hnsw" if n > AUTO_HNSW_ABOVE else "flat"
        params = {**DEFAULT_PARAMS.get(kind, {}), **self.params}
        if kind == "ivfpq":
            params["nlist"] = params["nlist"] or int(min(max(1, n // 39), 4 * np.sqrt(n)))
            params["m"] = params["m"] or next(m for m in (64, 48, 32, 16, 8, 4, 2, 1) if dim % m == 0 and m <= dim)
        return IndexConfig(kind, params)


class PlaceIndex:
    """A faiss index plus the descriptors used to re-score compressed shortlists."""

    def __init__(self, index: faiss.Index, config: IndexConfig, descriptors: np.ndarray):
        self.index = index
        self.config = config
        self.descriptors = descriptors
        self._apply_search_params()

    @classmethod
    def build(cls, descriptors: np.ndarray, config: IndexConfig) -> "PlaceIndex":
        x = np.ascontiguousarray(descriptors, dtype=np.float32)
        n, dim = x.shape
        config = config.resolved(n, dim)
        p = config.params
        if config.type == "flat":
            index = faiss.IndexFlatIP(dim)
        elif config.type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, p["M"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = p["efConstruction"]
        else:
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFPQ(quantizer, dim, p["nlist"], p["m"], p["nbits"], faiss.METRIC_INNER_PRODUCT)
            index.train(x)
        index.add(x)
        return cls(index, config, x)

    @classmethod
    def load(cls, path: Path, config: IndexConfig, descriptors: np.ndarray) -> "PlaceIndex":
        return cls(faiss.read_index(str(path)), config, descriptors)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    def _apply_search_params(self) -> None:
        p = self.config.params
        if self.config.type == "hnsw":
            self.index.hnsw.efSearch = max(p["efSearch"], 1)
        elif self.config.type == "ivfpq":
            self.index.nprobe = p["nprobe"]

    @property
    def size(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """[Q, dim] -> (scores [Q, k] cosine, ids [Q, k]); ids of -1 where fewer than k places exist."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.descriptors.shape[1])
        k = min(k, self.size)
        if self.config.type == "hnsw":
            self.index.hnsw.efSearch = max(self.config.params["efSearch"], k)
        if self.config.type != "ivfpq":
            return self.index.search(q, k)
        _, shortlist = self.index.search(q, max(k, self.config.params["rescore"]))
        scores = np.full(shortlist.shape, -np.inf, np.float32)
        for i, ids in enumerate(shortlist):
            valid = ids >= 0
            scores[i, valid] = self.descriptors[ids[valid]] @ q[i]
        order = np.argsort(-scores, axis=1)[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(shortlist, order, 1)
