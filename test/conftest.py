"""Shared test setup: DDS stays on loopback with a per-run domain; where the shared data lives."""

import os
import tempfile
from pathlib import Path

import pytest

from vpr_harness.replay.dds_env import apply_loopback_dds_env

# Before anything imports rclpy: discovery on this machine only, a domain of our own.
apply_loopback_dds_env()
# Exported ONNX files go to a directory of this run, not the user's cache (child processes inherit
# it).
os.environ["VPR_ROS_CACHE_DIR"] = tempfile.mkdtemp(prefix="vpr_ros_test_cache_")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# Git-ignored build and output directories (colcon in place, `make demo`, evaluations): not
# package source, so the lint tests skip them (ament's linters already skip '.'/'_' directories).
LINT_EXCLUDES = [
    str(REPO / name)
    for name in ("build", "install", "log", "out", "demo_out", "eval_out", "bench_out")
]


def shared_path(*parts: str) -> Path:
    """Return a path under ../shared, or skip the test saying why."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"{path} is absent: the shared data (../shared beside the repository) is not on this"
            " machine"
        )
    return path


def needs_shared(*parts: str) -> pytest.MarkDecorator:
    """Skip the decorated test, saying why, when ``../shared/<parts>`` is absent."""
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(
        not path.exists(),
        reason=(
            f"{path} is absent: the shared data (../shared beside the repository) is not on this"
            " machine"
        ),
    )
