"""
Logging set-up shared by the `vpr-ros` command and the node.

Our INFO, third parties quiet unless -v.
"""

from __future__ import annotations

import logging

# Loggers of libraries that speak at INFO on every start (faiss reports which SIMD build it tried).
THIRD_PARTY = (
    "faiss",
    "faiss.loader",
    "matplotlib",
    "PIL",
    "onnxruntime",
    "torch",
    "ray",
    "numexpr",
)


def quiet_third_party_logs(verbose: bool = False) -> None:
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def configure_logging(verbose: bool = False) -> None:
    """`vpr-ros`: vpr_ros messages at INFO (DEBUG with -v); third-party INFO only with -v."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("vpr_ros").setLevel(logging.DEBUG if verbose else logging.INFO)
    quiet_third_party_logs(verbose)
