"""
Re-rankers of the global top-K: FoL mutual-NN local matching, and geometric verification.

A re-ranker is named by its class's ``name``; ``create_reranker`` builds one for an extractor.
"""

from __future__ import annotations

from vpr_ros.errors import ConfigError
from vpr_ros.rerank.base import LocalFeatures, Reranker, order_by_score
from vpr_ros.rerank.fol import FolReranker
from vpr_ros.rerank.xfeat import XFeatReranker
from vpr_ros.inference.extractor import DescriptorExtractor

__all__ = ["LocalFeatures", "Reranker", "create_reranker", "order_by_score", "reranker_names"]
RERANKERS: dict[str, type[Reranker]] = {cls.name: cls for cls in (FolReranker, XFeatReranker)}


def reranker_names() -> tuple[str, ...]:
    return tuple(RERANKERS)


def create_reranker(name: str, extractor: DescriptorExtractor) -> Reranker:
    if name not in RERANKERS:
        raise ConfigError(
            f"unknown re-ranker {name!r}; choose none, auto or one of {', '.join(RERANKERS)}"
        )
    return RERANKERS[name](extractor)
