"""Helpers for tests that run the node in its own process (DDS on loopback, see conftest)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vpr_harness.replay.scenes import build_scene_map


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
    return build_scene_map(
        path, images, model, "/camera/image_raw", origin=(1000.0, 2000.0), source="test"
    )
