"""
Batches of P places x K images (GSV-Cities style), augmented and preprocessed as at inference.

Batches of an epoch depend only on (seed, epoch), so a resumed run sees the same data as an
uninterrupted one. Augmentation stands in for torchvision's RandAugment (the package does not
depend on torchvision): a random crop of 80-100 % of the area and brightness/contrast/colour
jitter.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.models.spec import ModelSpec
from vpr_ros.training.datasets import PlaceSet


def epoch_batches(
    places: PlaceSet,
    places_per_batch: int,
    images_per_place: int,
    seed: int,
    epoch: int,
    steps: int | None = None,
) -> list[np.ndarray]:
    """
    [P, K] image indices per batch.

    Every place once per epoch (or ``steps`` batches), K distinct images each.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(places))
    n_batches = len(order) // places_per_batch
    if steps is not None:
        n_batches = min(n_batches, steps) if n_batches else 0
    batches = []
    for b in range(n_batches):
        chosen = order[b * places_per_batch:(b + 1) * places_per_batch]
        batches.append(
            np.stack(
                [rng.choice(places.places[p], images_per_place, replace=False) for p in chosen]
            )
        )
    return batches


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = np.sqrt(rng.uniform(0.8, 1.0))
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = rgb[y:y + ch, x:x + cw].astype(np.float32)
    out = out * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)  # contrast, brightness
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.7, 1.3)  # saturation
    return np.clip(out, 0, 255).astype(np.uint8)


class PlaceBatchDataset(Dataset):
    """Item i = (images [P*K, 3, H, W] float32, labels [P*K] place ids) of batch i."""

    def __init__(
        self,
        places: PlaceSet,
        batches: list[np.ndarray],
        spec: ModelSpec,
        seed: int,
        epoch: int,
        labels: list[np.ndarray] | None = None,
        augmentation: bool = True,
    ) -> None:
        self.places, self.batches, self.spec = places, batches, spec
        self.seed, self.epoch, self.augmentation = seed, epoch, augmentation
        self.labels = labels

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i, 1])
        batch = self.batches[i]
        images = [self.places.image(int(j)) for j in batch.reshape(-1)]
        if self.augmentation:
            images = [augment(im, rng) for im in images]
        x = torch.from_numpy(preprocess_batch(images, self.spec))
        if self.labels is not None:
            labels = torch.as_tensor(self.labels[i].reshape(-1), dtype=torch.long)
        else:  # P x K layout: row r is one place
            labels = (
                torch.arange(batch.shape[0]).repeat_interleave(batch.shape[1])
                if batch.ndim == 2
                else torch.arange(len(batch))
            )
        return x, labels


def load_batches(
    dataset: PlaceBatchDataset, workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches in order, decoded by ``workers`` processes (0: in this process)."""
    return iter(
        DataLoader(
            dataset,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            persistent_workers=False,
            multiprocessing_context="fork" if workers else None,
        )
    )


def preprocess_images(places: PlaceSet, indices: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    return torch.from_numpy(preprocess_batch([places.image(int(i)) for i in indices], spec))
