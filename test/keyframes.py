"""Test helpers over vpr_ros.maps.poses: yaw of a quaternion, the keyframes a selector keeps."""

from collections.abc import Sequence

import numpy as np

from vpr_ros.maps.poses import KeyframeSelector


def quaternion_to_yaw(q: np.ndarray) -> np.ndarray:
    """Return the yaw (rad) of quaternions x, y, z, w [..., 4]."""
    q = np.asarray(q, np.float64)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def select_keyframes(
    positions: Sequence[np.ndarray | None] | np.ndarray,
    min_distance_m: float = 0.0,
    every_n: int = 1,
) -> list[int]:
    """Return the indices of the frames KeyframeSelector keeps; a None or NaN row is "no pose"."""
    selector = KeyframeSelector(min_distance_m, every_n)
    return [i for i, position in enumerate(positions) if selector.keep(position)]
