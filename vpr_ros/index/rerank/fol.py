"""FoL re-ranking (chenshunpeng/FoL, ``test_FoL.py``): count mutual nearest-neighbour local matches.

For a query and each global top-K candidate, with Q [n_q, 128] and C [n_c, 128] the
unit-norm local rows of FoL's discriminative regions (``FoLNet.global_and_local``):
``S = C @ Q.T``; query row i and candidate row j match when each is the other's
best row (argmax, lowest index on exact ties) and ``S[j, i] > 0.7`` (strictly).
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
the same with and without it.
"""

from __future__ import annotations

import numpy as np
import torch

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.index.rerank.base import LocalFeatures, Reranker, order_by_score
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.models.fol import LOCAL_DIM

THRESHOLD = 0.7  # official ``match_batch_tensor`` default T2, the value evaluation uses


def _rows(descriptors: np.ndarray) -> torch.Tensor:
    # fp16 rows from the map store are compared in float32, like the query (CPU fp16 GEMM is slow)
    return torch.from_numpy(np.ascontiguousarray(descriptors, dtype=np.float32))


def mutual_matches(query: torch.Tensor, candidate: torch.Tensor, threshold: float = THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual nearest-neighbour pairs of query rows [n_q, d] and candidate rows [n_c, d] with dot > threshold.

    Returns (query row indices, candidate row indices), one entry per match, by query row.
    """
    if len(query) == 0 or len(candidate) == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    similarity = candidate @ query.T  # [n_c, n_q], the official layout
    best_candidate_row = similarity.argmax(dim=0)  # per query row
    best_query_row = similarity.argmax(dim=1)  # per candidate row
    query_rows = torch.arange(len(query))
    mutual = best_query_row[best_candidate_row] == query_rows
    kept = mutual & (similarity[best_candidate_row, query_rows] > threshold)
    return query_rows[kept], best_candidate_row[kept]


def mutual_match_counts(query: np.ndarray, candidates: list[np.ndarray], threshold: float = THRESHOLD) -> np.ndarray:
    """Number of ``mutual_matches`` of the query with each candidate -> [K] float32."""
    q = _rows(query)
    with torch.inference_mode():
        return np.array([len(mutual_matches(q, _rows(c), threshold)[0]) for c in candidates], dtype=np.float32)


class FolReranker(Reranker):
    """FoL re-ranking. ``rerank_score``: the number of mutual nearest-neighbour local matches with dot > 0.7.

    Local features come out of the same forward pass as the global descriptor
    (``extractor.extract_with_local``), so ``extract_query`` costs the local head, not a
    second backbone run. Needs a FoL model on the torch backend.
    """

    name = "fol"

    def __init__(self, extractor: DescriptorExtractor, threshold: float = THRESHOLD) -> None:
        if not extractor.supports_local_features:
            raise BackendUnavailableError(
                f"re-ranker fol needs a FoL model on backend torch; model {extractor.spec.name} on backend "
                f"{extractor.backend} gives no local features. Use --model fol-b/fol-l with --backend torch, "
                "or another re-ranker")
        self.extractor = extractor
        self.threshold = threshold

    def describe(self) -> dict:
        return {"reranker": self.name, "dim": LOCAL_DIM, "model_fingerprint": self.extractor.fingerprint,
                "model": self.extractor.spec.name, "input_size": list(self.extractor.spec.input_size)}

    def map_features(self, images: list[np.ndarray]) -> list[LocalFeatures]:
        return self.extract_map(images, self.extractor)[1]

    def query_features(self, image: np.ndarray) -> LocalFeatures:
        return self.extract_query(image, self.extractor)[1]

    def extract_map(self, images: list[np.ndarray], extractor: DescriptorExtractor) -> tuple[np.ndarray, list[LocalFeatures]]:
        self._check_extractor(extractor)
        descriptors, rows = extractor.extract_with_local(images)
        return descriptors, [LocalFeatures(r) for r in rows]

    def extract_query(self, image: np.ndarray, extractor: DescriptorExtractor) -> tuple[np.ndarray, LocalFeatures]:
        descriptors, features = self.extract_map([image], extractor)
        return descriptors[0], features[0]

    def rerank(
        self, query: LocalFeatures, candidates: list[LocalFeatures], global_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        counts = mutual_match_counts(query.descriptors, [c.descriptors for c in candidates], self.threshold)
        return order_by_score(counts, np.asarray(global_scores, dtype=np.float32)), counts

    def _check_extractor(self, extractor: DescriptorExtractor) -> None:
        if extractor.fingerprint != self.extractor.fingerprint:
            raise ValueError(f"re-ranker fol was made for model {self.extractor.fingerprint}, called with {extractor.fingerprint}")
