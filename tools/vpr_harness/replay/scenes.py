"""
Synthetic places and a map of them.

For live-node campaigns that need a map but no bag (overload, fuzzing).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def scene_images(n: int, height: int = 480, width: int = 640, seed: int = 0) -> list[np.ndarray]:
    """
    `n` distinct [height, width, 3] uint8 scenes.

    A 12x16 grid of random colour blocks, one per place.
    """
    rng = np.random.default_rng(seed)
    blocks = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(n)]
    return [
        np.ascontiguousarray(
            np.kron(b, np.ones((-(-height // 12), -(-width // 16), 1), np.uint8))[:height, :width]
        )
        for b in blocks
    ]


def build_scene_map(
    out: str | Path,
    scenes: list[np.ndarray],
    model: str = "baseline",
    topic: str = "",
    origin: tuple[float, float] = (0.0, 0.0),
    source: str = "synthetic scenes",
) -> Path:
    """Build a map whose place i is scene i, at ``origin`` + (10 i, 0) metres, heading east."""
    from vpr_ros.search.faiss_index import IndexConfig
    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.maps.mapdir import write_map
    from vpr_ros.maps.places import Place

    extractor = create_extractor(model)
    x0, y0 = origin
    places = [
        Place(i, (i + 1) * 1_000_000_000, x0 + 10.0 * i, y0, 0.0, 0.0, 0.0, 0.0, 1.0,
              math.nan, math.nan, "", source, topic)
        for i in range(len(scenes))
    ]
    return write_map(
        Path(out),
        extractor.extract(scenes),
        places,
        extractor.describe(),
        IndexConfig("flat"),
        [{"source": source}],
    )


def raw_image_msg(rgb: np.ndarray, encoding: str = "rgb8", frame_id: str = ""):
    """Build a sensor_msgs/Image (rclpy) holding ``rgb`` in ``encoding``; the caller stamps it."""
    from sensor_msgs.msg import Image

    from vpr_ros.imaging import rgb_to_image_fields

    msg = Image()
    for k, v in rgb_to_image_fields(rgb, encoding).items():
        # rclpy copies bytes fast, arrays element by element
        setattr(msg, k, v.tobytes() if k == "data" else v)
    msg.header.frame_id = frame_id
    return msg
