"""
PCA (optionally whitened) learned from a map's descriptors, applied to map and queries alike.

Large descriptors (baseline 5120-D, SciceVPR 10752-D, FoL 8448-D) make a million-place
map tens of GB; projecting onto the top principal directions shrinks the index and the
search cost.  Projected vectors are L2-normalised again, so inner product stays cosine.
Whitening divides each direction by its standard deviation, which evens out the
dominant (often appearance) directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vpr_ros.errors import ConfigError, MapIntegrityError, MapModelMismatchError

FILE = "pca.npz"
FIT_SAMPLES = 32_768  # rows the covariance is estimated from (evenly spaced over the map)
_CHUNK = 65_536  # rows projected at once: bounded memory on million-place maps


@dataclass(frozen=True)
class Pca:
    mean: np.ndarray  # [input_dim] float32
    # [output_dim, input_dim] float32; rows divided by their std when whitened
    components: np.ndarray
    whiten: bool
    explained_variance: float  # fraction of the fitted data's variance the kept directions hold

    @property
    def input_dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, descriptors: np.ndarray, output_dim: int, whiten: bool = False) -> "Pca":
        """Principal directions of (a sample of) ``descriptors`` [N, D]; needs N > output_dim."""
        n, dim = descriptors.shape
        if not 0 < output_dim < dim:
            raise ConfigError(
                f"--pca-dim {output_dim} must be between 1 and the descriptor dim minus one"
                f" ({dim - 1})"
            )
        if output_dim >= n:
            raise ConfigError(
                f"PCA to {output_dim} dims needs more than {output_dim} places to learn from; the"
                f" map has {n}: give a smaller --pca-dim or none"
            )
        rows = np.linspace(0, n - 1, min(n, FIT_SAMPLES)).astype(np.int64)
        x = np.asarray(descriptors[rows], dtype=np.float64)
        mean = x.mean(0)
        x -= mean
        if len(x) >= dim:  # covariance [D, D]
            eigval, eigvec = np.linalg.eigh(x.T @ x / (len(x) - 1))
            top = np.argsort(eigval)[::-1][:output_dim]
            variance, directions = eigval[top], eigvec[:, top].T
        # fewer samples than dims: eigenvectors of the Gram matrix [N, N] give the same directions
        # cheaper
        else:
            eigval, u = np.linalg.eigh(x @ x.T)
            top = np.argsort(eigval)[::-1][:output_dim]
            directions = (x.T @ u[:, top]).T / np.sqrt(np.clip(eigval[top], 1e-12, None))[:, None]
            variance = eigval[top] / (len(x) - 1)
        total = float((x * x).sum() / (len(x) - 1))
        variance = np.clip(variance, 1e-12, None)
        components = directions / np.sqrt(variance)[:, None] if whiten else directions
        return cls(
            mean.astype(np.float32),
            components.astype(np.float32),
            whiten,
            float(variance.sum() / total),
        )

    def project(self, descriptors: np.ndarray) -> np.ndarray:
        """
        [N, input_dim] -> [N, output_dim] float32, L2-normalised.

        In chunks, so a memmap is fine.
        """
        if descriptors.ndim != 2 or descriptors.shape[1] != self.input_dim:
            raise MapModelMismatchError(
                f"descriptors of shape {tuple(descriptors.shape)} do not fit this map's PCA, which"
                f" takes {self.input_dim}-D descriptors: query with the model the map was built"
                " with (see `vpr-ros inspect-map`)"
            )
        out = np.empty((len(descriptors), self.output_dim), np.float32)
        for start in range(0, len(descriptors), _CHUNK):
            chunk = np.asarray(descriptors[start:start + _CHUNK], dtype=np.float32) - self.mean
            y = chunk @ self.components.T
            out[start:start + len(y)] = y / np.maximum(
                np.linalg.norm(y, axis=1, keepdims=True), 1e-12
            )
        return out

    def describe(self) -> dict:
        """Return the manifest entry."""
        return {
            "file": FILE,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "whiten": self.whiten,
            "explained_variance": round(self.explained_variance, 6),
        }

    def save(self, directory: Path) -> str:
        np.savez(
            directory / FILE,
            mean=self.mean,
            components=self.components,
            whiten=np.array(self.whiten),
            explained_variance=np.array(self.explained_variance),
        )
        return FILE

    @classmethod
    def load(cls, directory: Path, entry: dict) -> "Pca":
        with np.load(directory / entry["file"], allow_pickle=False) as f:
            pca = cls(
                f["mean"], f["components"], bool(f["whiten"]), float(f["explained_variance"])
            )
        if (pca.input_dim, pca.output_dim, pca.whiten) != (
            entry["input_dim"],
            entry["output_dim"],
            entry["whiten"],
        ) or pca.mean.shape != (pca.input_dim,):
            raise MapIntegrityError(
                f"{entry['file']} holds a {pca.input_dim}->{pca.output_dim} PCA (whiten"
                f" {pca.whiten}), the manifest says {entry['input_dim']}->{entry['output_dim']}"
                f" (whiten {entry['whiten']})"
            )
        return pca
