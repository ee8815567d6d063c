"""
Node overhead: publish -> /vpr/match p50 minus the bare decode + localize p50 of the same frames.

Raw 640x480 rgb8 (sensor_msgs/Image) and JPEG (sensor_msgs/CompressedImage) in one run, each
through its own `localize` node process (DDS on loopback). Per frame, this process stamps the
message right before publishing it and takes the match's arrival time in its subscriber; between
two node frames it decodes the same message and localizes it in-process with the node's own
configuration (the bare pipeline: what the node must do anyway). Node and bare frames alternate
at the same cadence, so both see the same machine load and the same idle gaps.
Overhead = what the node adds: DDS transport, deserialisation into Python, thread hand-off, the
PlaceMatch message and publishing, and the return trip of /vpr/match. Goal (issue 8): at most
1.0 ms for both.

    python bench/bench_node.py [--model baseline] [--backend auto] [--frames 100] [--rate 8]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

from common import IMAGE_TOPIC, POSE_TOPIC, demo_bags, percentiles, print_machine

from vpr_harness.replay.dds_env import apply_loopback_dds_env

from vpr_ros.stamps import stamp_to_ns  # noqa: E402

WARMUP_FRAMES = 3  # first frames of each transport: caches, allocator pools, DDS buffers


class MatchReceiver:
    """
    Subscribes /vpr/match on its own node and spin thread; keeps each match's arrival by stamp.

    Arrival: when the callback ran, when DDS received it and when the node's DDS wrote it.
    """

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from vpr_ros.msg import PlaceMatch

        if not rclpy.ok():
            rclpy.init()
        self.node = rclpy.create_node("vpr_bench_node")
        self.arrived: dict[int, dict] = {}
        self._event = threading.Event()
        self.node.create_subscription(PlaceMatch, "/vpr/match", self._on_match, 100)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _on_match(self, msg, info) -> None:
        callback_ns = time.time_ns()
        self.arrived[stamp_to_ns(msg.header.stamp)] = {
            "callback_ns": callback_ns, "received_ns": info["received_timestamp"],
            "written_ns": info["source_timestamp"],
            "latency_ms": {k: getattr(msg.latency_ms, k)
                           for k in msg.latency_ms.get_fields_and_field_types()}}
        self._event.set()

    def wait(self, stamp_ns: int, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while stamp_ns not in self.arrived and time.monotonic() < deadline:
            self._event.wait(max(0.0, deadline - time.monotonic()))
            self._event.clear()
        return self.arrived.get(stamp_ns)

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()


def _node_vs_bare(receiver: MatchReceiver, node_log: Path, node, msg_cls, topic: str,
                  messages: list, localizer, period_s: float) -> tuple[list[dict], list[dict]]:
    """
    Alternate node frames and bare frames, one per period.

    Returns (one dict per frame the node answered: e2e_ms, the way out split and the node's
    latency_ms stages; one dict per frame: bare decode_ms, localize_ms and bare_ms), both
    without the warm-up frames.
    """
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from tqdm import tqdm

    from vpr_ros.imaging import image_msg_to_rgb
    from vpr_harness.replay.processes import wait_for_subscriber
    from vpr_ros.stamps import ns_to_sec_nanosec

    pub = receiver.node.create_publisher(
        msg_cls, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    wait_for_subscriber(pub, node, node_log, timeout=120)
    node_frames, bare_frames = [], []
    start = time.monotonic()
    for i, msg in enumerate(tqdm(messages, desc=topic, unit="frame", leave=False)):
        time.sleep(max(0.0, start + 2 * i * period_s - time.monotonic()))
        stamp_ns = time.time_ns()  # the system clock, as the node's ROS clock and DDS use
        msg.header.stamp.sec, msg.header.stamp.nanosec = ns_to_sec_nanosec(stamp_ns)
        pub.publish(msg)
        got = receiver.wait(stamp_ns, 2.0)
        if got is not None and i >= WARMUP_FRAMES:
            lat = got["latency_ms"]
            done_ns = stamp_ns + (lat["age_at_receipt"] + lat["total"]) * 1e6
            node_frames.append({
                "e2e_ms": (got["callback_ns"] - stamp_ns) * 1e-6,
                "out_node_ms": (got["written_ns"] - done_ns) * 1e-6,
                "out_dds_ms": (got["received_ns"] - got["written_ns"]) * 1e-6,
                "out_take_ms": (got["callback_ns"] - got["received_ns"]) * 1e-6,
                **lat,
            })

        time.sleep(max(0.0, start + (2 * i + 1) * period_s - time.monotonic()))
        t0 = time.perf_counter()
        rgb = image_msg_to_rgb(msg)
        t1 = time.perf_counter()
        match = localizer.localize(rgb, stamp_ns, msg.header.frame_id)
        t2 = time.perf_counter()
        if i >= WARMUP_FRAMES:
            # unstaged: the localizer's own work outside its timed stages (the node's counts in
            # its "out: message + publish")
            bare_frames.append({"decode_ms": (t1 - t0) * 1e3, "localize_ms": (t2 - t1) * 1e3,
                                "bare_ms": (t2 - t0) * 1e3,
                                "unstaged_ms": (t2 - t1) * 1e3 - match.latency_ms.total})
    receiver.node.destroy_publisher(pub)
    return node_frames, bare_frames


def _median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return float(np.median(values)) if values else float("nan")


def _report(name: str, node_frames: list[dict], bare_frames: list[dict],
            sent: int) -> tuple[float, float]:
    """
    Print one transport's table and split.

    Returns (overhead: node p50 - bare p50, added: median over frames of e2e less the node's own
    decode + localize, less the localizer's work outside its timed stages), ms. The second
    compares within each frame, so load that changes between a node frame and the next bare frame
    cancels; it assumes the node's pipeline runs as fast as the bare one, which the table shows.
    """
    e2e = percentiles([r["e2e_ms"] for r in node_frames])
    bare = percentiles([r["bare_ms"] for r in bare_frames])
    overhead = e2e["p50"] - bare["p50"]
    # the localizer's unstaged work is outside the node's total but inside the bare time
    added = float(np.median([r["e2e_ms"] - r["total"] + r.get("queue", 0.0)
                             for r in node_frames])) - _median(bare_frames, "unstaged_ms")
    print(f"\n### {name}: {len(node_frames)}/{sent} frames answered"
          f" (after {WARMUP_FRAMES} warm-up)")
    print("| latency (ms) | p50 | p95 |\n|---|---|---|")
    print(f"| bare: decode + localize, in-process | {bare['p50']:.2f} | {bare['p95']:.2f} |")
    print(f"| node: publish -> /vpr/match received | {e2e['p50']:.2f} | {e2e['p95']:.2f} |")
    print(f"| overhead (node p50 - bare p50) | {overhead:.2f} | |")
    print(f"| added per frame (e2e - node's decode + localize), median | {added:.2f} | |")
    # Where the node's time goes, medians per frame, in order. In: stamp -> DDS receipt in the node
    # (the publisher's serialisation and DDS), DDS receipt -> callback (executor wake-up,
    # deserialisation into Python), callback -> worker thread. The node's pipeline. Out: pipeline
    # done -> the node's DDS write (message, publish; less the localizer's unstaged work, which the
    # bare pipeline has too), DDS, and this process's take of /vpr/match.
    split = {
        "in: publish + DDS": float(np.median(
            [r["age_at_receipt"] - r.get("take", float("nan")) for r in node_frames])),
        "in: take": _median(node_frames, "take"),
        "queue": _median(node_frames, "queue"),
        "node pipeline (decode + localize)": float(np.median(
            [r["total"] - r.get("queue", 0.0) for r in node_frames])),
        "out: message + publish": (_median(node_frames, "out_node_ms")
                                   - _median(bare_frames, "unstaged_ms")),
        "out: DDS": _median(node_frames, "out_dds_ms"),
        "out: take here": _median(node_frames, "out_take_ms"),
    }
    print("node split, median ms: " + "; ".join(f"{k} {v:.2f}" for k, v in split.items()))
    print(
        f"bare split, median ms: decode {_median(bare_frames, 'decode_ms'):.2f}; localize"
        f" {_median(bare_frames, 'localize_ms'):.2f}; node decode"
        f" {_median(node_frames, 'decode'):.2f}"
    )
    return overhead, added


def main() -> None:
    apply_loopback_dds_env()  # before rclpy starts here: DDS on this machine, a domain of our own
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--model", default="baseline", help="default: %(default)s")
    ap.add_argument("--backend", default="auto",
                    help="inference backend of both (default: %(default)s, resolved here and"
                    " passed on to the node so both run the same)")
    ap.add_argument("--frames", type=int, default=100, help="frames per traversal (default: 100)")
    ap.add_argument("--rate", type=float, default=8.0,
                    help="node frames and bare frames per second together, alternating"
                    " (default: %(default)s; slow enough that nothing queues)")
    args = ap.parse_args()

    from sensor_msgs.msg import CompressedImage, Image

    from vpr_ros import parameters
    from vpr_ros.imaging import rgb_to_compressed
    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.localizer import Localizer, LocalizerConfig
    from vpr_ros.maps.build import build_map
    from vpr_ros.maps.mapdir import load_map
    from vpr_ros.maps.sources import BagSource
    from vpr_harness.replay.processes import start_node, stop_process
    from vpr_harness.replay.scenes import raw_image_msg

    print_machine()
    print("load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    work, map_bag, query_bag = demo_bags(args.frames)
    extractor = create_extractor(args.model, backend=args.backend)
    map_dir = build_map(
        BagSource([map_bag], IMAGE_TOPIC, POSE_TOPIC, min_distance_m=2.0), extractor, work / "map"
    )
    defaults = {p.name: p.default for p in parameters.PARAMETERS}
    rgbs = [f.image for f in BagSource([query_bag], IMAGE_TOPIC)]
    raw = [raw_image_msg(rgb, "rgb8", frame_id="camera") for rgb in rgbs]
    jpeg = []
    for rgb in rgbs:
        fmt, data = rgb_to_compressed(rgb, "jpeg", quality=90)
        jpeg.append(CompressedImage(format=fmt, data=data))
        jpeg[-1].header.frame_id = "camera"
    print(f"model {args.model} ({extractor.backend}/{extractor.precision}), {len(rgbs)} query"
          f" frames {rgbs[0].shape[1]}x{rgbs[0].shape[0]}, JPEG median"
          f" {np.median([len(m.data) for m in jpeg]) / 1e3:.0f} KB, node and bare frames"
          f" alternating at {args.rate:g} Hz")

    receiver = MatchReceiver()
    overhead, added, p50 = {}, {}, {}
    try:
        for name, cls, topic, messages in (("raw", Image, IMAGE_TOPIC, raw),
                                           ("compressed", CompressedImage,
                                            IMAGE_TOPIC + "/compressed", jpeg)):
            # a fresh localizer per transport: its temporal filter starts where the node's does
            localizer = Localizer(load_map(map_dir, extractor.describe()), extractor,
                                  LocalizerConfig.from_parameters(defaults))
            log = work / f"node_{name}.log"
            node = start_node(map_dir, args.model, topic, log,
                              extra=["-p", f"backend:={extractor.backend}"])
            try:
                node_frames, bare_frames = _node_vs_bare(
                    receiver, log, node, cls, topic, messages, localizer, 1.0 / args.rate)
            finally:
                stop_process(node)
            (work / f"frames_{name}.json").write_text(
                json.dumps({"node": node_frames, "bare": bare_frames}))
            overhead[name], added[name] = _report(name, node_frames, bare_frames,
                                                  len(messages))
            p50[name] = (percentiles([r["e2e_ms"] for r in node_frames])["p50"],
                         percentiles([r["bare_ms"] for r in bare_frames])["p50"])
    finally:
        receiver.close()
    print(f"\nper-frame timings: {work}/frames_*.json")
    print(
        f"raw_overhead_ms={overhead['raw']:.2f} compressed_overhead_ms="
        f"{overhead['compressed']:.2f} raw_p50_ms={p50['raw'][0]:.2f}"
        f" bare_p50_ms={p50['raw'][1]:.2f} compressed_p50_ms={p50['compressed'][0]:.2f}"
        f" compressed_bare_p50_ms={p50['compressed'][1]:.2f} raw_added_ms={added['raw']:.2f}"
        f" compressed_added_ms={added['compressed']:.2f}"
    )


if __name__ == "__main__":
    main()
