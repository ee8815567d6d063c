"""
Choose the default `baseline` descriptor by measurement on Nordland (winter queries vs summer map).

For each candidate prints Recall@1/5 at frame tolerances 1 and 10, alone and
with SeqSLAM-style sequence filtering over 10 frames, and the latency of one
640x480 RGB image through preprocessing + descriptor on this machine's threads.

    .venv/bin/python bench/baseline_selection.py [--data ../shared/data/nordland_trimmed] [--step
    1]

Candidates: the README's patch-normalised grayscale reference, and
EfficientNet-lite0 early features on a grid (vpr_ros.models.baseline) at
several depths, input sizes and grids.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from vpr_ros.evaluation.recall import positives_by_frame, rank_database, recall_at_n
from vpr_ros.temporal.seqslam import SequenceConfig, filter_sequence
from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.models.shipped import efficientnet_lite0_checkpoint
from vpr_ros.models.baseline import GridCNNDescriptor
from vpr_ros.models.spec import ModelSpec

Describe = Callable[[list[np.ndarray]], np.ndarray]
TOLERANCES = (1, 10)
LITE_MEAN_STD = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def patch_normalised_grayscale(
    images: list[np.ndarray], size: tuple[int, int] = (32, 64), patch: int = 8
) -> np.ndarray:
    """Describe as the README's reference does: grayscale 64x32, 8x8 patches standardised."""
    gray = np.stack(
        [
            cv2.resize(
                cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), size[::-1], interpolation=cv2.INTER_AREA
            )
            for im in images
        ]
    )
    b, h, w = gray.shape
    patches = gray.astype(np.float32).reshape(b, h // patch, patch, w // patch, patch)
    patches = (patches - patches.mean(axis=(2, 4), keepdims=True)) / (
        patches.std(axis=(2, 4), keepdims=True) + 1e-6
    )
    flat = patches.reshape(b, -1)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


def grid_cnn(num_blocks: int, input_size: tuple[int, int], grid: tuple[int, int]) -> Describe:
    model = GridCNNDescriptor(num_blocks, grid).eval()
    checkpoint = efficientnet_lite0_checkpoint()
    model.load_state_dict(
        {k: checkpoint[k.removeprefix("trunk.")] for k in model.state_dict()}, strict=True
    )
    spec = ModelSpec(
        name="candidate", factory="", input_size=input_size, dim=model.dim, **LITE_MEAN_STD
    )

    @torch.inference_mode()
    def describe(images: list[np.ndarray]) -> np.ndarray:
        chunks = [images[i:i + 256] for i in range(0, len(images), 256)]
        return np.concatenate(
            [model(torch.from_numpy(preprocess_batch(c, spec))).numpy() for c in chunks]
        )

    return describe


def candidates() -> dict[str, Describe]:
    return {
        "grayscale 64x32, 8x8 patch-normalised (README reference)": patch_normalised_grayscale,
        "lite0 3 blocks, 64x128 input, 4x8 grid (768-D)": grid_cnn(3, (64, 128), (4, 8)),
        "lite0 3 blocks, 32x64 input, 8x16 grid (3072-D)": grid_cnn(3, (32, 64), (8, 16)),
        "lite0 3 blocks, 64x128 input, 8x16 grid (3072-D)": grid_cnn(3, (64, 128), (8, 16)),
        "lite0 5 blocks, 64x128 input, 8x16 grid (5120-D) = baseline": grid_cnn(
            5, (64, 128), (8, 16)
        ),
        "lite0 8 blocks, 64x128 input, 4x8 grid (2560-D)": grid_cnn(8, (64, 128), (4, 8)),
    }


def load_season(root: Path, season: str, step: int) -> list[np.ndarray]:
    paths = sorted((root / season).glob("images-*.png"))[::step]
    if not paths:
        raise SystemExit(
            f"no images under {root / season}; pass --data pointing at nordland_trimmed"
        )
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


def latency_ms(describe: Describe, repeats: int = 30) -> float:
    """Median time of one 640x480 image (the demo's camera size), after warm-up."""
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    for _ in range(3):
        describe([image])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        describe([image])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[1]
        / ".."
        / "shared"
        / "data"
        / "nordland_trimmed",
    )
    parser.add_argument(
        "--step", type=int, default=1, help="use every step-th place (1 = all 3576)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    summer, winter = load_season(args.data, "summer", args.step), load_season(
        args.data, "winter", args.step
    )
    frames = np.arange(len(winter))
    positives = {t: positives_by_frame(frames, frames, t) for t in TOLERANCES}
    sequence = SequenceConfig(length=10)
    print(
        f"Nordland winter vs summer, {len(winter)} places; R@1/R@5 at tolerance {TOLERANCES}; seq"
        f" = {sequence}"
    )
    print(
        "| descriptor | R@1/5 tol 1 | R@1/5 tol 10 | seq R@1/5 tol 1 | seq R@1/5 tol 10 |"
        " ms/image |"
    )
    print("|---|---|---|---|---|---|")
    for name, describe in candidates().items():
        database, queries = describe(summer), describe(winter)
        single = rank_database(queries, database, 5)
        filtered, _ = filter_sequence(queries @ database.T, sequence, k=5)
        cells = [
            f"{r[1]:.3f} / {r[5]:.3f}"
            for ranked in (single, filtered)
            for r in (recall_at_n(ranked, positives[t], (1, 5)) for t in TOLERANCES)
        ]
        print(f"| {name} | {' | '.join(cells)} | {latency_ms(describe):.1f} |", flush=True)


if __name__ == "__main__":
    main()
