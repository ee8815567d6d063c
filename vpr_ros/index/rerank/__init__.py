"""Re-rankers of the global top-K: FoL mutual-NN local matching, and geometric verification."""

from vpr_ros.index.rerank.base import LocalFeatures, Reranker, order_by_score

__all__ = ["LocalFeatures", "Reranker", "order_by_score"]
