"""
Environment for processes that must keep DDS on this machine (tests, demo, benchmarks).

No rclpy import here: apply it before rclpy is imported or in a child's environment.
"""

from __future__ import annotations

import os
from pathlib import Path

LOOPBACK_PROFILE = Path(__file__).with_name("fastdds_loopback.xml")


def loopback_dds_env(env: dict | None = None) -> dict:
    """
    Return ``env`` (default: this process's environment) with discovery on localhost.

    A domain of this process's own unless one is set, and the loopback Fast DDS profile unless
    one is set.
    """
    env = dict(os.environ if env is None else env)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 100))
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(LOOPBACK_PROFILE))
    return env


def apply_loopback_dds_env() -> None:
    os.environ.update(loopback_dds_env())
