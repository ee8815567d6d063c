"""
Node cold start to its first /vpr/match, per backend, with an empty and then a warm cache.

    .venv/bin/python bench/bench_node_start.py [--configs torch:fp32 onnxruntime:int8 ...]

For each ``backend:precision`` the `localize` node is started twice as its own process (as a
user starts it, loopback DDS) on one small map of the default model, with an engine cache
directory of its own: the first start finds it empty (ONNX export, int8 file, compiled
package, auto's measurement), the second reuses it.  A camera frame is published every
100 ms from this process from the moment the node starts; the time is from starting the
process to receiving its first /vpr/match.  Ends with one line
``<backend>-<precision>.first_s=.. <backend>-<precision>.second_s=..`` per configuration.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import print_machine

from vpr_harness.replay.dds_env import apply_loopback_dds_env
from vpr_harness.replay.processes import start_node, stop_process
from vpr_harness.replay.scenes import build_scene_map, raw_image_msg, scene_images

DEFAULT_CONFIGS = (
    "torch:fp32",
    "torch-compile:bf16",
    "onnxruntime:fp32",
    "onnxruntime:int8",
    "openvino:fp32",
    "auto:fp32",
)
TOPIC = "/camera/image_raw"


def time_to_first_match(
    collector, map_path: Path, backend: str, precision: str, cache: Path, log: Path,
    limit_s: float,
) -> float:
    """Start the node, feed it frames, return seconds until its first /vpr/match."""
    from sensor_msgs.msg import Image

    publisher = collector.node.create_publisher(Image, TOPIC, 10)
    frame = raw_image_msg(scene_images(1, seed=7)[0])
    collector.matches.clear()
    start = time.monotonic()
    node = start_node(
        map_path,
        "baseline",
        TOPIC,
        log,
        extra=[
            "-p", f"backend:={backend}",
            "-p", f"precision:={precision}",
            "-p", f"engine_cache_dir:={cache}",
        ],
    )
    try:
        while not collector.matches:
            if node.poll() is not None or time.monotonic() - start > limit_s:
                raise RuntimeError(f"no match from the node: {log.read_text()[-1500:]}")
            publisher.publish(frame)
            time.sleep(0.1)
        return time.monotonic() - start
    finally:
        stop_process(node)
        collector.node.destroy_publisher(publisher)


def main() -> None:
    apply_loopback_dds_env()  # before rclpy starts here: DDS on this machine, a domain of our own
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="backend:precision pairs"
    )
    parser.add_argument(
        "--limit-s", type=float, default=300.0, help="per start (default: %(default)s)"
    )
    args = parser.parse_args()
    print_machine()
    from vpr_harness.replay.collector import OutputCollector

    collector = OutputCollector()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        map_path = build_scene_map(work / "map", scene_images(20))
        print("| backend | first start s (empty cache) | second start s (warm cache) |")
        print("|---|---|---|", flush=True)
        for config in args.configs:
            backend, precision = config.split(":")
            cache = work / f"cache-{backend}-{precision}"
            starts = [
                time_to_first_match(
                    collector,
                    map_path,
                    backend,
                    precision,
                    cache,
                    work / f"{which}.log",
                    args.limit_s,
                )
                for which in ("first", "second")
            ]
            print(f"| {backend} {precision} | {starts[0]:.1f} | {starts[1]:.1f} |", flush=True)
            name = f"{backend}-{precision}"
            results += [f"{name}.first_s={starts[0]:.1f}", f"{name}.second_s={starts[1]:.1f}"]
    collector.close()
    print(" ".join(results))


if __name__ == "__main__":
    main()
