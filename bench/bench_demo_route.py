"""
The synthetic demo route: render ms/frame (wall and CPU) and time to write both bags.

    .venv/bin/python bench/bench_demo_route.py [--frames 400] [--every 4]

CPU time is reported beside wall time because other processes on a shared machine
inflate wall time; rendering is single-threaded numpy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from vpr_harness.demo.route import demo_traversals, write_demo_bags
from vpr_harness.demo.world import StreetWorld


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--frames", type=int, default=400, help="map traversal frames (the demo default)"
    )
    parser.add_argument(
        "--every", type=int, default=4, help="time every Nth frame of each traversal"
    )
    a = parser.parse_args()

    reference, query = demo_traversals(a.frames)
    spacing = np.linalg.norm(np.diff(reference.frame_positions(), axis=0), axis=1)
    print(
        f"route {reference.drive.route.length_m:.0f} m; map {reference.frames} frames every"
        f" {spacing.mean():.2f} m; query {query.frames} frames"
    )
    for scale in (0.5, 1.0):
        world = StreetWorld(seed=0, render_scale=scale)
        for name, traversal in (("map", reference), ("query", query)):
            poses = traversal.camera_poses()[:: a.every]
            world.render(poses[0], traversal.appearance)
            wall, cpu = time.perf_counter(), time.process_time()
            for pose in poses:
                world.render(pose, traversal.appearance)
            wall, cpu = (time.perf_counter() - wall) / len(poses), (
                time.process_time() - cpu
            ) / len(poses)
            print(f"render_scale {scale}, {name}: {wall * 1e3:.1f} ms/frame wall, "
                  f"{cpu * 1e3:.1f} ms CPU")
    for storage, compressed in (("sqlite3", False), ("mcap", True)):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            paths = write_demo_bags(tmp, frames=a.frames, storage=storage, compressed=compressed)
            seconds = time.perf_counter() - start
            size = sum(_size_mb(p) for p in paths)
            print(
                f"write both bags, {storage}, {'jpeg' if compressed else 'rgb8'}: {seconds:.1f} s,"
                f" {size:.0f} MB"
            )


if __name__ == "__main__":
    main()
