"""
FoL re-ranking (chenshunpeng/FoL, ``test_FoL.py``): count mutual nearest-neighbour local matches.

For a query and each global top-K candidate, with Q [n_q, 128] and C [n_c, 128] the
unit-norm local rows of FoL's discriminative regions (``FoLNet.global_and_local``):
``S = C @ Q.T``; query row i and candidate row j match when each is the other's
best row and ``S[j, i] > 0.7`` (strictly).
``rerank_score`` = the number of such matches; candidates are re-sorted by it.
The global scores take no part beyond breaking ties (the official code fuses nothing).

Two deliberate departures from the official code (the golden counts are the same):
- A candidate with exactly one mutual pair scores that pair (0 or 1). The official code
  scores it 0 whatever the pair (a tensor-shape accident, ``squeeze()`` of one index);
  that only happens for degenerate candidates (all-zero, or one real row).
- Ties keep the global order (``order_by_score``). The official order inside a tie comes
  from numpy's unstable argsort and differs between CPUs/numpy builds.

Rows are compared without the official zero padding: a zero row's dot is 0, never
above the threshold, and cannot take the argmax from a pair that is, so counts are
the same with and without it. Exact float ties at a query row's maximum: bit-identical
candidate rows pair once, as with the official argmax; two DIFFERENT rows with a
bit-identical dot above 0.7 to the same query row (not seen in practice) could pair
where the official first-index argmax would not.
"""

from __future__ import annotations

import numpy as np

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.rerank.base import LocalFeatures, Reranker, one_blas_thread, order_by_score
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.models.fol import LOCAL_DIM

THRESHOLD = 0.7  # official ``match_batch_tensor`` default T2, the value evaluation uses


def mutual_matches(
    query: np.ndarray, candidate: np.ndarray, threshold: float = THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """
    Mutual nearest-neighbour pairs of query rows [n_q, d] and candidate rows [n_c, d].

    Pairs with dot > threshold. Returns (query row indices, candidate row indices), one entry
    per match, by query row. Computed in float32 (fp16 rows of the map store are widened; CPU
    fp16 GEMM is slow).
    """
    if len(query) == 0 or len(candidate) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    query = np.asarray(query, dtype=np.float32)
    # [n_c, n_q], the official layout
    similarity = np.asarray(candidate, dtype=np.float32) @ query.T
    best_query_row = similarity.argmax(axis=1)  # per candidate row
    best = similarity[np.arange(len(similarity)), best_query_row]
    # Candidate row j and query row i = best_query_row[j] are mutual when j also holds the maximum
    # of column i. A max over axis 0 runs along contiguous memory; an argmax over it was ~50x
    # slower here.
    rows = np.flatnonzero((best == similarity.max(axis=0)[best_query_row]) & (best > threshold))
    # bit-identical candidate rows would pair one query row twice: keep the first, as argmax does
    query_rows, first = np.unique(best_query_row[rows], return_index=True)
    return query_rows, rows[first]


def mutual_match_counts(
    query: np.ndarray, candidates: list[np.ndarray], threshold: float = THRESHOLD
) -> np.ndarray:
    """Count the ``mutual_matches`` of the query with each candidate -> [K] float32."""
    query = np.asarray(query, dtype=np.float32)
    return np.array(
        [len(mutual_matches(query, c, threshold)[0]) for c in candidates], dtype=np.float32
    )


class FolReranker(Reranker):
    """
    FoL re-ranking.

    ``rerank_score``: the number of mutual nearest-neighbour local matches with dot > 0.7.

    Local features come out of the same forward pass as the global descriptor
    (``extractor.extract_with_local``), so ``extract_query`` costs the local head, not a
    second backbone run. Needs a FoL model on the torch backend.
    """

    name = "fol"

    def __init__(self, extractor: DescriptorExtractor, threshold: float = THRESHOLD) -> None:
        if not extractor.supports_local_features:
            raise BackendUnavailableError(
                f"re-ranker fol needs a FoL model on backend torch; model {extractor.spec.name} on"
                f" backend {extractor.backend} gives no local features. Use --model fol-b/fol-l"
                " with --backend torch, or another re-ranker"
            )
        self.extractor = extractor
        self.threshold = threshold

    def describe(self) -> dict:
        return {
            "reranker": self.name,
            "dim": LOCAL_DIM,
            "model_fingerprint": self.extractor.fingerprint,
            "model": self.extractor.spec.name,
            "input_size": list(self.extractor.spec.input_size),
        }

    def map_features(self, images: list[np.ndarray]) -> list[LocalFeatures]:
        return self.extract_map(images, self.extractor)[1]

    def query_features(self, image: np.ndarray) -> LocalFeatures:
        return self.extract_query(image, self.extractor)[1]

    def extract_map(
        self, images: list[np.ndarray], extractor: DescriptorExtractor
    ) -> tuple[np.ndarray, list[LocalFeatures]]:
        self._check_extractor(extractor)
        descriptors, rows = extractor.extract_with_local(images)
        return descriptors, [LocalFeatures(r) for r in rows]

    def extract_query(
        self, image: np.ndarray, extractor: DescriptorExtractor
    ) -> tuple[np.ndarray, LocalFeatures]:
        descriptors, features = self.extract_map([image], extractor)
        return descriptors[0], features[0]

    def rerank(
        self, query: LocalFeatures, candidates: list[LocalFeatures], global_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        with one_blas_thread():  # the same counts, faster on a few busy cores
            counts = mutual_match_counts(
                query.descriptors, [c.descriptors for c in candidates], self.threshold
            )
        return order_by_score(counts, np.asarray(global_scores)), counts

    def _check_extractor(self, extractor: DescriptorExtractor) -> None:
        if extractor.fingerprint != self.extractor.fingerprint:
            raise ValueError(
                f"re-ranker fol was made for model {self.extractor.fingerprint}, called with"
                f" {extractor.fingerprint}"
            )
