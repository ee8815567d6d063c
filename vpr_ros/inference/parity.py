"""How closely another backend's descriptors agree with torch fp32 on the same images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vpr_ros.inference.extractor import INPUT_NAME
from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.models.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class ParityReport:
    images: int
    max_abs_diff: float
    min_cosine: float

    def __str__(self) -> str:
        return (
            f"{self.images} images: max abs diff {self.max_abs_diff:.3g}, min cosine"
            f" {self.min_cosine:.6f}"
        )


def compare_descriptors(reference: np.ndarray, other: np.ndarray) -> ParityReport:
    """Row-wise agreement of two [N, dim] descriptor sets (cosine on L2-normalised rows)."""
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = other / np.linalg.norm(other, axis=1, keepdims=True)
    return ParityReport(
        len(a), float(np.abs(reference - other).max()), float((a * b).sum(1).min())
    )


def parity_check(
    model: nn.Module, spec: ModelSpec, onnx_path: str | Path, images: list[np.ndarray]
) -> ParityReport:
    """Torch fp32 vs the ONNX file (ONNX Runtime, CPU) on the same preprocessed images."""
    import onnxruntime as ort

    batch = preprocess_batch(images, spec)
    with torch.no_grad():
        expected = model.eval().float().cpu()(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {INPUT_NAME: x[None]})[0] for x in batch])
    return compare_descriptors(expected, got)
