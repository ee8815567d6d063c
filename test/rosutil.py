"""Helpers for tests that run the node in its own process (DDS on loopback, see conftest)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from vpr_ros.index.faiss_index import IndexConfig
from vpr_ros.inference.factory import create_extractor
from vpr_ros.maps.mapdir import write_map
from vpr_ros.maps.places import Place


def place_images(n: int, seed: int = 0, size=(240, 320)) -> list[np.ndarray]:
    """
    Distinct textured images.

    Coloured rectangles and lines on a gradient, one scene per place.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for _ in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = rng.integers(30, 200, 3)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            cv2.rectangle(
                img,
                (x0, y0),
                (x0 + int(rng.integers(10, 120)), y0 + int(rng.integers(10, 90))),
                tuple(int(c) for c in rng.integers(0, 255, 3)),
                -1,
            )
        out.append(img)
    return out


def perturb(img: np.ndarray, seed: int) -> np.ndarray:
    """Return the same place seen again: brighter and noisier."""
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float32) * 1.1 + rng.normal(0, 6, img.shape), 0, 255).astype(
        np.uint8
    )


def build_test_map(path: Path, images: list[np.ndarray], model: str = "baseline") -> Path:
    """Build a map whose place i sits at (1000 + 10 i, 2000) metres, heading east."""
    extractor = create_extractor(model)
    places = [
        Place(
            i,
            (i + 1) * 1_000_000_000,
            1000.0 + 10 * i,
            2000.0,
            0.0,
            0.0,
            0.0,
            0.0,
            1.0,
            math.nan,
            math.nan,
            "",
            "test",
            "/camera/image_raw",
        )
        for i in range(len(images))
    ]
    return write_map(
        path,
        extractor.extract(images),
        places,
        extractor.describe(),
        IndexConfig("flat"),
        [{"source": "test images"}],
    )
