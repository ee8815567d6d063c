"""
Nearest-place search over L2-normalised descriptors with faiss (inner product = cosine).

Search runs in the map's *search space*: the model's descriptors, or their PCA
projection when the map has one (``pca.py``); ``PlaceIndex.search`` projects queries
itself, so callers always pass the model's descriptors.

Three index types:
  flat   exact search; for maps whose vectors fit ``EXACT_MAX_BYTES`` (a few ms per query).
  hnsw   graph search over 8-bit scalar-quantised vectors, its shortlist re-scored exactly;
         for up to ``HNSW_MAX_PLACES`` (0.25 ms, recall@1 0.992 against exact at 100k places).
  ivfpq  inverted lists of product-quantised codes (one byte per 8 dims) with a re-scored
         shortlist of 256: for larger maps (1 ms, recall@1 0.993 at a million 512-D places,
         where the graph needs over 2 ms for 0.986), and builds 4x faster than the graph.

The exact re-score reads ``rescore_f16.npy``, the search-space vectors in float16,
memory-mapped: only the shortlisted rows are touched.  It is a copy beside
``descriptors.npy`` (which stays float32 at the model's dim, the source of truth that
``vpr-ros build-index`` refits PCA and rebuilds indexes from) because the re-score must
happen in the projected space; float16 halves its pages at a cosine error (~1e-3) far
below the gap between neighbouring places.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from vpr_ros.errors import ConfigError, MapIntegrityError, MapModelMismatchError
from vpr_ros.search.pca import Pca

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
RESCORE_FILE = "rescore_f16.npy"
INDEX_TYPES = ("auto", "flat", "hnsw", "ivfpq")
DEFAULT_PARAMS = {
    "flat": {},
    "hnsw": {"M": 32, "efConstruction": 80, "efSearch": 256, "rescore": 32},
    "ivfpq": {"nlist": 0, "m": 0, "nbits": 8, "nprobe": 8, "rescore": 256},  # 0 = chosen from size
}
RESCORED = ("hnsw", "ivfpq")
# graph recall falls with size on clustered maps: 0.992 at 100k, 0.935 at 1M (efSearch 256)
HNSW_MAX_PLACES = 250_000
# exact search reads every vector per query: ~3 ms at this size, 5-10 ms on a busy host
EXACT_MAX_BYTES = 32 << 20
# resident index above which auto trades the HNSW graph for IVF-PQ codes
MEMORY_BUDGET_BYTES = 4 << 30
# Nordland R@1 0.541 vs 0.545 unprojected; 512: 0.513 (bench/bench_pca_recall.py)
PCA_AUTO_DIM = 1024
TRAIN_SAMPLES = 262_144  # rows the quantisers are trained on
SINGLE_THREAD_BELOW = 8  # queries per call searched on one thread (the node's single frames)
_ADD_CHUNK = 65_536


@dataclass
class IndexConfig:
    type: str = "auto"
    params: dict = field(default_factory=dict)
    pca_dim: int | str | None = "auto"  # "auto", None (the model's dims) or the output dims
    whiten: bool = False

    def pca_output_dim(self, n: int, dim: int) -> int | None:
        """
        Dims after PCA, or None for no PCA.

        ``auto`` projects only maps too big for exact search in the model's dims, and only
        descriptors larger than ``PCA_AUTO_DIM``.
        """
        if self.pca_dim == "auto":
            big = n * dim * 4 > EXACT_MAX_BYTES
            return PCA_AUTO_DIM if big and dim > PCA_AUTO_DIM and n > PCA_AUTO_DIM else None
        if self.pca_dim is None or self.pca_dim == 0:
            return None
        if not isinstance(self.pca_dim, int) or isinstance(self.pca_dim, bool):
            raise ConfigError(
                f"pca_dim {self.pca_dim!r} must be 'auto', 'none' or a number of dims"
            )
        return self.pca_dim

    def resolved(self, n: int, dim: int) -> "IndexConfig":
        """Type and parameters for ``n`` vectors of ``dim`` (the search space's dim)."""
        kind = self.type
        if kind not in INDEX_TYPES:
            raise ConfigError(
                f"unknown index type {kind!r}; choose one of {', '.join(INDEX_TYPES)}"
            )
        if kind == "auto":
            # 8-bit codes + level-0 links + upper levels
            graph = n * (dim + 2 * DEFAULT_PARAMS["hnsw"]["M"] * 4 + 16)
            small_graph = n <= HNSW_MAX_PLACES and graph <= MEMORY_BUDGET_BYTES
            kind = "flat" if n * dim * 4 <= EXACT_MAX_BYTES else "hnsw" if small_graph else "ivfpq"
        unknown = set(self.params) - set(DEFAULT_PARAMS[kind])
        if unknown:
            raise ConfigError(f"index {kind} has no parameter {', '.join(sorted(unknown))}; "
                              f"it takes {', '.join(DEFAULT_PARAMS[kind]) or 'none'}")
        params = {**DEFAULT_PARAMS[kind], **self.params}
        if kind == "ivfpq":
            # ~sqrt(n) lists: 1000 at a million places, so 8 probed lists hold ~8000 codes
            params["nlist"] = params["nlist"] or int(min(max(1, n // 39), np.sqrt(n)))
            # 8 dims per sub-quantizer (64 bytes a place at 512-D): a shortlist of 256 then holds
            # the true nearest place for 0.993 of queries at a million places
            params["m"] = params["m"] or next(
                (m for m in (256, 128, 64, 32, 16, 8, 4, 2) if dim % m == 0 and dim // m >= 8), 1
            )
        return IndexConfig(kind, params, self.pca_dim, self.whiten)


@contextmanager
def _single_thread(active: bool) -> Iterator[None]:
    """
    Turn OpenMP off for a few queries.

    Splitting one query over threads saves nothing, and on a busy host the join waits for a
    descheduled thread (exact search of 10k x 512: 1 ms on one thread, 60-90 ms on two). The
    setting is the calling thread's own, so other threads are unaffected.
    """
    if not active:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _train_rows(x: np.ndarray) -> np.ndarray:
    rows = np.linspace(0, len(x) - 1, min(len(x), TRAIN_SAMPLES)).astype(np.int64)
    return np.ascontiguousarray(x[rows], dtype=np.float32)


class PlaceIndex:
    """
    A faiss index over the search space and the PCA into it.

    Also the float16 vectors that re-score shortlists.
    """

    def __init__(
        self,
        index: faiss.Index,
        config: IndexConfig,
        input_dim: int,
        pca: Pca | None = None,
        rescore_vectors: np.ndarray | None = None,
    ):
        self.index = index
        self.config = config
        self.input_dim = input_dim
        self.pca = pca
        self.rescore_vectors = rescore_vectors
        if config.type == "hnsw":
            self.index.hnsw.efSearch = config.params["efSearch"]
        elif config.type == "ivfpq":
            self.index.nprobe = config.params["nprobe"]

    @property
    def dim(self) -> int:
        """Dims of the search space."""
        return int(self.index.d)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(
        cls, descriptors: np.ndarray, config: IndexConfig, pca: Pca | None = None
    ) -> "PlaceIndex":
        """
        Fit PCA (if any) and build the index from [N, D] L2-normalised descriptors.

        A memmap is fine. ``pca``: a fitted projection to use instead of fitting one (a map grown
        by ``build-map --append`` keeps its search space, so it is not re-learned).
        """
        n, input_dim = descriptors.shape
        if pca is None:
            pca_dim = config.pca_output_dim(n, input_dim)
            pca = Pca.fit(descriptors, pca_dim, config.whiten) if pca_dim else None
        x = (
            pca.project(descriptors)
            if pca
            else np.ascontiguousarray(descriptors, dtype=np.float32)
        )
        config = config.resolved(n, x.shape[1])
        p, dim = config.params, x.shape[1]
        if config.type == "flat":
            index = faiss.IndexFlatIP(dim)
        elif config.type == "hnsw":
            index = faiss.IndexHNSWSQ(
                dim, faiss.ScalarQuantizer.QT_8bit, p["M"], faiss.METRIC_INNER_PRODUCT
            )
            index.hnsw.efConstruction = p["efConstruction"]
        else:
            index = faiss.IndexIVFPQ(
                faiss.IndexFlatIP(dim),
                dim,
                p["nlist"],
                p["m"],
                p["nbits"],
                faiss.METRIC_INNER_PRODUCT,
            )
            # small maps: no warning per codebook
            index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
        if not index.is_trained:
            index.train(_train_rows(x))
        with tqdm(
            total=n,
            desc=f"{config.type} index",
            unit="place",
            dynamic_ncols=True,
            disable=n < 4 * _ADD_CHUNK,
        ) as bar:
            for start in range(0, n, _ADD_CHUNK):
                index.add(np.ascontiguousarray(x[start:start + _ADD_CHUNK], dtype=np.float32))
                bar.update(min(_ADD_CHUNK, n - start))
        rescore = x.astype(np.float16) if config.type in RESCORED else None
        return cls(index, config, input_dim, pca, rescore)

    def describe(self) -> dict:
        """Return the manifest's index entry."""
        return {
            "type": self.config.type,
            "params": self.config.params,
            "dim": self.dim,
            "pca": self.pca.describe() if self.pca else None,
            "rescore": (
                {"file": RESCORE_FILE, "dtype": "float16"}
                if self.rescore_vectors is not None
                else None
            ),
        }

    def save(self, directory: Path) -> list[str]:
        """
        Write the index and its companions into ``directory``.

        Returns the file names written.
        """
        faiss.write_index(self.index, str(directory / INDEX_FILE))
        names = [INDEX_FILE]
        if self.pca is not None:
            names.append(self.pca.save(directory))
        if self.rescore_vectors is not None:
            np.save(directory / RESCORE_FILE, self.rescore_vectors)
            names.append(RESCORE_FILE)
        return names

    @classmethod
    def load(cls, directory: Path, entry: dict, input_dim: int) -> "PlaceIndex":
        """
        Load what ``save`` wrote, as the manifest's ``entry`` (``describe()``) says.

        Checks that the parts fit.
        """
        config = IndexConfig(
            entry["type"],
            entry["params"],
            entry["pca"]["output_dim"] if entry.get("pca") else None,
            bool(entry["pca"]["whiten"]) if entry.get("pca") else False,
        )
        index = faiss.read_index(str(directory / INDEX_FILE))
        pca = Pca.load(directory, entry["pca"]) if entry.get("pca") else None
        rescore = (
            np.load(directory / entry["rescore"]["file"], mmap_mode="r", allow_pickle=False)
            if entry.get("rescore")
            else None
        )
        if isinstance(rescore, np.memmap):
            # Rows are read at random: no readahead.  (Mapped pages still count as resident: at a
            # million places, 1000 queries leave ~1.9 GiB of this file mapped; clean page cache the
            # kernel can drop.)
            rescore._mmap.madvise(mmap.MADV_RANDOM)
        search_dim = pca.output_dim if pca else input_dim
        problems = []
        if pca is not None and pca.input_dim != input_dim:
            problems.append(
                f"its PCA takes {pca.input_dim}-D descriptors, the map's are {input_dim}-D"
            )
        if index.d != search_dim:
            problems.append(f"{INDEX_FILE} is {index.d}-D, the search space is {search_dim}-D")
        if (rescore is None) == (entry["type"] in RESCORED):
            problems.append(
                f"index type {entry['type']} {'needs' if rescore is None else 'has no use for'}"
                f" {RESCORE_FILE}"
            )
        elif rescore is not None and (
            rescore.dtype != np.float16 or rescore.shape != (index.ntotal, search_dim)
        ):
            problems.append(
                f"{RESCORE_FILE} holds {rescore.dtype} {rescore.shape}, expected float16"
                f" ({index.ntotal}, {search_dim})"
            )
        if problems:
            raise MapIntegrityError(f"map {directory}: {'; '.join(problems)}")
        return cls(index, config, input_dim, pca, rescore)

    def project(self, queries: np.ndarray) -> np.ndarray:
        """Model descriptors [Q, input_dim] (or [input_dim]) -> search-space vectors [Q, dim]."""
        q = np.asarray(queries, dtype=np.float32)
        q = q[None] if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[1] != self.input_dim:
            raise MapModelMismatchError(
                f"query descriptors of shape {tuple(np.shape(queries))} do not fit this map, which"
                f" takes {self.input_dim}-D descriptors: query with the model the map was built"
                " with (see `vpr-ros inspect-map`)"
            )
        return self.pca.project(q) if self.pca else np.ascontiguousarray(q)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """
        Model descriptors [Q, input_dim] -> (scores [Q, k] cosine in the search space, ids [Q, k]).

        Ids of -1 where fewer than k places exist.
        """
        q = self.project(queries)
        k = min(k, self.size)
        shortlist_size = (
            k if self.rescore_vectors is None else max(k, self.config.params["rescore"])
        )
        if self.config.type == "hnsw":
            self.index.hnsw.efSearch = max(self.config.params["efSearch"], shortlist_size)
        with _single_thread(len(q) < SINGLE_THREAD_BELOW):
            scores, ids = self.index.search(q, shortlist_size)
        return (scores, ids) if self.rescore_vectors is None else self._rescore(q, ids, k)

    def similarity(self, descriptor: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """
        Cosine, in the search space, of one model descriptor with the places ``ids``.

        The score ``search`` gives them (float16 rows where the index re-scores), for places
        outside a shortlist.
        """
        q = self.project(descriptor)[0]
        ids = np.asarray(ids, dtype=np.int64)
        rows = (
            self.rescore_vectors[ids]
            if self.rescore_vectors is not None
            else self.index.reconstruct_batch(ids)
        )
        return np.asarray(rows, dtype=np.float32) @ q

    def _rescore(
        self, q: np.ndarray, shortlist: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Exact cosine of each query with its shortlisted places (float16 rows).

        Best ``k`` first.
        """
        scores = np.full(shortlist.shape, -np.inf, np.float32)
        for i, ids in enumerate(shortlist):
            valid = ids >= 0
            rows = np.sort(ids[valid])  # ascending reads from the memory map
            scores[i, : len(rows)] = (
                np.asarray(self.rescore_vectors[rows], dtype=np.float32) @ q[i]
            )
            shortlist[i, : len(rows)], shortlist[i, len(rows):] = rows, -1
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(shortlist, order, 1)
