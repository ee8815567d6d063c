"""
`build-map` throughput against bare descriptor extraction of the same frames, in one run.

Goal (issue 8): build-map images/s >= 0.9 x bare extraction images/s, for the default model and
for a ViT model.

Bare extraction is the extractor's own batched ``extract`` (preprocessing + network) on the
decoded 640x480 frames held in memory. build-map is the command's path on the rosbag2 of the same
frames: read the bag, decode, interpolate poses, extract, build the index, write the map. Both use
the extractor the command would create (backend ``auto``); a model that needs official weights
gets seeded random weights, loaded through ``--weights`` like a user's file (speed does not
depend on weight values). Runs alternate (bare, build-map, bare, ...) so load from other
processes hits both alike; the ratio is of the best run of each (the median of the pairs'
ratios is printed too). build-map's fixed costs (opening the bag and reading its pose track,
building the index, writing and syncing the map) count in its time: they weigh more on a shorter
bag than the default 600 frames (a minute of driving at 10 Hz). Ends with one line
``baseline_ratio=... vit_ratio=... model_vit=...``.

    python bench/bench_build_map.py [--model baseline] [--vit-model scicevpr-b]
        [--frames 600] [--vit-frames 16] [--repeats 5] [--vit-repeats 3]
        [--compressed]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import IMAGE_TOPIC, POSE_TOPIC, print_machine


def extractor_for(name: str, workdir: Path):
    """Create the extractor `build-map --model name` would (seeded weights if it needs some)."""
    import torch

    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.models import registry

    spec = registry.spec(name)
    if not spec.needs_weights or spec.shipped_weights is not None:
        return create_extractor(name)
    torch.manual_seed(0)
    weights = workdir / f"{name}-seeded.pth"
    torch.save(registry.build(name).state_dict(), weights)
    return create_extractor(name, weights=weights)


def measure(
    name: str, frames: int, batch_size: int, repeats: int, compressed: bool
) -> tuple[float, float, int]:
    """Return (best-of ratio, median ratio, frames) of build-map over bare extraction."""
    from vpr_ros.maps.build import build_map
    from vpr_ros.maps.sources import BagSource

    from vpr_harness.demo.route import (
        COMPRESSED_CAMERA_TOPIC,
        demo_traversals,
        write_traversal_bag,
    )
    from vpr_harness.demo.world import StreetWorld

    work = Path(tempfile.mkdtemp(prefix=f"vpr_bench_{name}_"))
    bag = work / "bag"  # the demo route's map traversal only: no query bag to render
    traversal = demo_traversals(frames)[0]
    write_traversal_bag(bag, traversal, StreetWorld(seed=0), compressed=compressed)
    extractor = extractor_for(name, work)
    topic = COMPRESSED_CAMERA_TOPIC if compressed else IMAGE_TOPIC
    source = BagSource([bag], topic, POSE_TOPIC, min_distance_m=0.0)
    images = [f.image for f in source]  # decoded once, held in memory
    n = len(images)

    def bare() -> float:
        t0 = time.perf_counter()
        for i in range(0, n, batch_size):
            extractor.extract(images[i:i + batch_size])
        return n / (time.perf_counter() - t0)

    def build() -> float:
        t0 = time.perf_counter()
        build_map(source, extractor, work / "map", batch_size=batch_size)
        return n / (time.perf_counter() - t0)

    extractor.extract(images[:batch_size])  # warm-up (allocations, lazy initialisation)
    bares, builds = [], []
    for _ in range(repeats):
        bares.append(bare())
        builds.append(build())
    size = "x".join(map(str, extractor.spec.input_size))
    print(
        f"model {name} ({extractor.backend} {extractor.precision}, input {size}), {n} frames of"
        f" 640x480 {'JPEG' if compressed else 'rgb8'} from a rosbag2 (sqlite3) with GPS fixes,"
        f" batch {batch_size}; images/s per run, bare then build-map:"
    )
    print(f"  bare extraction (decoded images in memory): {' '.join(f'{x:.1f}' for x in bares)}")
    print(
        "  build-map (read, decode, poses, extract, index, write):"
        f" {' '.join(f'{x:.1f}' for x in builds)}"
    )
    best = max(builds) / max(bares)
    median = statistics.median(b / r for b, r in zip(builds, bares))  # of each run's pair
    print(
        f"  ratio build-map / bare: of the best runs {best:.3f}, median of the pairs {median:.3f}"
        " (goal >= 0.9)"
    )
    return best, median, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--model", default="baseline", help="the default model's row")
    ap.add_argument(
        "--vit-model", default="scicevpr-b", help="the ViT model's row ('none' to skip)"
    )
    ap.add_argument("--frames", type=int, default=600, help="frames for --model")
    ap.add_argument("--vit-frames", type=int, default=16, help="frames for --vit-model")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="bare/build-map pairs for --model")
    ap.add_argument(
        "--vit-repeats", type=int, default=3, help="bare/build-map pairs for --vit-model"
    )
    ap.add_argument(
        "--compressed",
        action="store_true",
        help="JPEG CompressedImage frames (build-map decodes them; bare extraction gets them"
        " decoded)",
    )
    a = ap.parse_args()
    print_machine()
    results = {"baseline": measure(a.model, a.frames, a.batch_size, a.repeats, a.compressed)}
    if a.vit_model != "none":
        results["vit"] = measure(
            a.vit_model, a.vit_frames, a.batch_size, a.vit_repeats, a.compressed
        )
    keys = " ".join(f"{k}_ratio={best:.3f}" for k, (best, _, _) in results.items())
    keys += " " + " ".join(f"{k}_median_ratio={m:.3f}" for k, (_, m, _) in results.items())
    keys += " " + " ".join(f"{k}_frames={n}" for k, (_, _, n) in results.items())
    print(f"{keys} model={a.model} model_vit={a.vit_model}")


if __name__ == "__main__":
    main()
