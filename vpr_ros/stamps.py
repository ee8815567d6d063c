"""ROS time stamps <-> integer nanoseconds, the one conversion every module uses."""

from __future__ import annotations

from typing import Any

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp: Any) -> int:
    """
    Convert a builtin_interfaces/Time -> nanoseconds.

    An rclpy or rosbags message, or a ``{"sec", "nanosec"}`` dict.
    """
    if isinstance(stamp, dict):
        return int(stamp["sec"]) * NS_PER_S + int(stamp["nanosec"])
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return sec, nanosec


def ns_to_stamp_dict(ns: int) -> dict[str, int]:
    """Return the JSON form used in PlaceMatch: ``{"sec": ..., "nanosec": ...}``."""
    sec, nanosec = ns_to_sec_nanosec(ns)
    return {"sec": sec, "nanosec": nanosec}
