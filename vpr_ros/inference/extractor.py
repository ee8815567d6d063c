"""
One interface for every descriptor backend.

A ``DescriptorExtractor`` turns RGB uint8 images into L2-normalised float32
descriptors.  Backends differ only in ``_run`` (preprocessed batch -> descriptors).
"""

from __future__ import annotations

import abc

import numpy as np

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.models.spec import ModelSpec

# Tensor names of exported graphs and engines: preprocessed images in, descriptors out.
INPUT_NAME = "images"
OUTPUT_NAME = "descriptors"


def _l2_normalised(descriptors: np.ndarray) -> np.ndarray:
    out = np.asarray(descriptors, dtype=np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class DescriptorExtractor(abc.ABC):
    """
    Images in, descriptors out.

    Attributes every extractor has:
        spec: the model preset (input size, normalisation, descriptor size).
        backend: "torch", "onnxruntime" or "tensorrt".
        precision: "fp32", "fp16", "bf16" or "int8".
        fingerprint: identifies model + weights; a map records it and refuses other ones.
    """

    backend: str = ""

    def __init__(self, spec: ModelSpec, fingerprint: str, precision: str = "fp32"):
        self.spec = spec
        self.fingerprint = fingerprint
        self.precision = precision

    @property
    def dim(self) -> int:
        return self.spec.dim

    def describe(self) -> dict:
        """Return what a map manifest records about the model."""
        s = self.spec
        return {
            "name": s.name,
            "fingerprint": self.fingerprint,
            "input_size": list(s.input_size),
            "dim": s.dim,
            "preprocessing": {
                "resize": list(s.input_size),
                "mean": list(s.mean),
                "std": list(s.std),
            },
        }

    def extract(self, images: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 images (any size) -> [N, dim] float32, L2-normalised rows."""
        return self.extract_preprocessed(preprocess_batch(images, self.spec))

    def extract_preprocessed(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        return _l2_normalised(self._run(np.ascontiguousarray(batch, dtype=np.float32)))

    @property
    def supports_local_features(self) -> bool:
        """
        Whether ``extract_with_local`` works.

        The model has a local head and this backend runs it (FoL on torch).
        """
        return False

    def extract_with_local(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """
        RGB uint8 images -> (global descriptors, local rows).

        Global descriptors: [N, dim], L2-normalised; local rows: per image [n_i, d] float32.
        Both come from ONE forward pass (FoL: the rows of the official top-225 token selection,
        unpadded).
        """
        if not self.supports_local_features:
            raise BackendUnavailableError(
                f"model {self.spec.name} on backend {self.backend} gives no local features; FoL"
                " re-ranking needs a FoL model on backend torch (the ONNX and TensorRT graphs"
                " hold the global descriptor only)"
            )
        batch = np.ascontiguousarray(preprocess_batch(images, self.spec), dtype=np.float32)
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32), []
        descriptors, rows = self._run_with_local(batch)
        return _l2_normalised(descriptors), rows

    def _run_with_local(self, batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """
        Preprocessed batch -> (raw global descriptors, local rows per image).

        Only where ``supports_local_features``.
        """
        raise NotImplementedError(f"backend {self.backend} gives no local features")

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed [N, 3, H, W] float32 -> [N, dim] descriptors."""
