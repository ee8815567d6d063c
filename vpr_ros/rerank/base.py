"""
The re-ranker interface: local features per image, and re-sorting the global top-K with them.

A re-ranker is used in two places:
- map build: ``extract_map(images, extractor)`` gives each map image's global
  descriptor and local features; the features go to the map's ``local/`` store
  (``vpr_ros.maps.local_features``).
- per frame: ``extract_query(image, extractor)`` gives the query's global
  descriptor and local features, the global index gives the top-K places, and
  ``rerank(query, [store[id] for id in top_k], global_scores)`` re-sorts them.

``extract_*`` exist so that a re-ranker whose local features come out of the
descriptor network itself (FoL) runs the network once per image; the default
implementations run the extractor, then ``map_features``/``query_features``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

# the extractor is only passed through; index/ does not need inference/ at import
if TYPE_CHECKING:
    from vpr_ros.inference.extractor import DescriptorExtractor


@dataclass(frozen=True)
class LocalFeatures:
    """
    One image's local features.

    descriptors: [n, d]; float16/float32 (unit rows for FoL) or uint8 for binary features.
    keypoints: [n, 2] float32 pixel (x, y) in the frame the re-ranker documents, or None
        where matching needs no geometry (FoL).
    """

    descriptors: np.ndarray
    keypoints: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.descriptors.ndim != 2:
            raise ValueError(
                f"local descriptors must be [n, d], got shape {self.descriptors.shape}"
            )
        if self.keypoints is not None and self.keypoints.shape != (len(self.descriptors), 2):
            raise ValueError(
                f"keypoints must be [n, 2] with n = {len(self.descriptors)} descriptors, got"
                f" {self.keypoints.shape}"
            )

    def __len__(self) -> int:
        return len(self.descriptors)


def order_by_score(rerank_scores: np.ndarray, global_scores: np.ndarray) -> np.ndarray:
    """
    Positions best first.

    Higher ``rerank_scores`` first; ties by higher global score, then by input position.

    Deterministic on every CPU (the official FoL code's tie order depends on numpy's sort build).
    """
    rerank_scores, global_scores = np.asarray(rerank_scores), np.asarray(global_scores)
    if rerank_scores.shape != global_scores.shape or rerank_scores.ndim != 1:
        raise ValueError(
            f"one rerank score and one global score per candidate, got {rerank_scores.shape} and"
            f" {global_scores.shape}"
        )
    positions = np.arange(len(rerank_scores))
    return np.lexsort((positions, -global_scores, -rerank_scores))


def one_blas_thread() -> threadpool_limits:
    """
    Limit numpy's BLAS to one thread inside a ``with`` block (the re-rankers' matching).

    The similarity products of matching (XFeat 1024x64x1024, FoL ~3400x128x3400, one per
    candidate) gain nothing from BLAS threads on a few cores and lose to their start-up and to
    a core busy with other work (XFeat: 31 ms with OpenBLAS's 2 threads on a loaded 2-core
    host, 2.4 ms in one). Threads split the output, not the dot products, so the
    similarities are the same. Entering costs about 1 ms (threadpoolctl finds the loaded
    libraries each time): once per frame, not per candidate.
    """
    return threadpool_limits(limits=1, user_api="blas")


class Reranker(abc.ABC):
    """
    Re-sorts the global top-K candidates of a query with local features.

    ``rerank_score`` has ONE meaning per re-ranker, stated in the subclass's ``name``
    docstring (FoL: the number of surviving mutual nearest-neighbour matches).
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def describe(self) -> dict:
        """
        Return what the map's ``local/meta.json`` records about these features.

        At least ``reranker``, ``dim``, ``model_fingerprint``; a store whose record differs is
        refused at load.
        """

    @abc.abstractmethod
    def map_features(self, images: list[np.ndarray]) -> list[LocalFeatures]:
        """
        Local features of map images (RGB uint8 [H, W, 3], any size), one per image.

        At build time.
        """

    @abc.abstractmethod
    def query_features(self, image: np.ndarray) -> LocalFeatures:
        """Local features of one query frame (RGB uint8 [H, W, 3])."""

    @abc.abstractmethod
    def rerank(
        self, query: LocalFeatures, candidates: list[LocalFeatures], global_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Re-sort candidates (given in global-retrieval order, ``global_scores`` aligned with them).

        Returns (order, rerank_scores): ``order`` [K] int64 positions into ``candidates``, best
        first; ``rerank_scores`` [K] float32 aligned with the INPUT order (not with ``order``).
        Empty query or candidate features give a score, never an exception.
        """

    def extract_map(
        self, images: list[np.ndarray], extractor: DescriptorExtractor
    ) -> tuple[np.ndarray, list[LocalFeatures]]:
        """Build time: (global descriptors [N, dim] float32, local features per image)."""
        return extractor.extract(images), self.map_features(images)

    def extract_query(
        self, image: np.ndarray, extractor: DescriptorExtractor
    ) -> tuple[np.ndarray, LocalFeatures]:
        """Per frame: (global descriptor [dim] float32, local features)."""
        return extractor.extract([image])[0], self.query_features(image)
