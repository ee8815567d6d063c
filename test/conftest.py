"""Shared test setup: DDS stays on loopback with a per-run domain; where the shared data lives."""

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports rclpy: discovery on this machine only, a domain of our own.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 100))
# Exported ONNX files go to a directory of this run, not the user's cache (child processes inherit it).
os.environ["VPR_ROS_CACHE_DIR"] = tempfile.mkdtemp(prefix="vpr_ros_test_cache_")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test saying why."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data (../shared beside the repository) is not on this machine")
    return path
