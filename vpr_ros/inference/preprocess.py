"""Image -> network input, identical for map building, offline queries and the node."""

from __future__ import annotations

import cv2
import numpy as np

from vpr_ros.models.spec import ModelSpec


def preprocess(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> float32 [3, h, w] resized to the model's input and normalised."""
    h, w = spec.input_size
    src_h, src_w = rgb.shape[:2]
    # INTER_AREA when shrinking avoids aliasing (like an antialiased resize); linear when growing.
    interp = cv2.INTER_AREA if (src_h > h or src_w > w) else cv2.INTER_LINEAR
    x = cv2.resize(rgb, (w, h), interpolation=interp).astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(spec.mean, dtype=np.float32)
    x /= np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_batch(images: list[np.ndarray], spec: ModelSpec) -> np.ndarray:
    return (
        np.stack([preprocess(im, spec) for im in images])
        if images
        else np.zeros((0, 3, *spec.input_size), np.float32)
    )
