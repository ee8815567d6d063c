"""
Overload: 640x480 frames at camera rates the node cannot keep up with, through a live node.

    python -m vpr_harness.replay.overload --rate 60 --frames 5000 --rate 300 --frames 5000

One localize node (its own process, DDS on loopback) is fed raw rgb8 640x480 frames by a
publisher in this process, phase after phase (e.g. 60 Hz, then 300 Hz). Per phase it reports
what the node counted (received, processed, dropped, bad, failed, from /diagnostics), whether
received = processed + dropped, whether every match's stamp is a processed frame's stamp
(sent, unique, in order), the node's RSS growth over the phase, and the latency p50 over the first
and the last quarter of the processed frames: end to end (frame stamp to the match's arrival here,
one clock) and inside the node (its own `total`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vpr_harness.replay.dds_env import apply_loopback_dds_env
from vpr_harness.replay.scenes import build_scene_map, raw_image_msg, scene_images
from vpr_ros.stamps import stamp_to_ns

WIDTH, HEIGHT = 640, 480
PLACES = 8
TOPIC = "/overload/camera"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _totals(diagnostics: dict) -> dict[str, int]:
    return {
        k: int(diagnostics[f"frames_{k}"])
        for k in ("received", "processed", "dropped", "bad", "failed")
    }


def _settled_totals(collector, timeout: float = 30.0) -> dict[str, int]:
    """Node totals once it has finished with every frame it got: two diagnostics in a row agree."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        seen = len(collector.diagnostics)
        collector.wait_for(lambda: len(collector.diagnostics) > seen, 3.0)
        totals = _totals(collector.diagnostics[-1])
        if totals == last:
            return totals
        last = totals
    return last or {}


def _p50(values: list[float]) -> float:
    return float(np.percentile(values, 50)) if values else float("nan")


def run_overload(
    workdir: str | Path,
    phases: tuple[tuple[float, int], ...] = ((60.0, 5000), (300.0, 5000)),
    model: str = "baseline",
    extra_params: list[str] | None = None,
) -> list[dict]:
    """
    One dict per (rate_hz, frames) phase, all through one node.

    Keys: rate_hz, frames (sent), send_rate_hz (achieved), received, processed, dropped, bad,
    failed, accounted (received == processed + dropped), matches, stamps_ok, rss_start_mb,
    rss_end_mb, rss_growth_pct, latency_p50_first_ms, latency_p50_last_ms (end to end),
    node_latency_p50_first_ms, node_latency_p50_last_ms, seconds.
    """
    apply_loopback_dds_env()
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from vpr_harness.replay.collector import OutputCollector
    from vpr_harness.replay.processes import start_node, stop_process, wait_for_subscriber

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    scenes = scene_images(PLACES, HEIGHT, WIDTH)
    map_dir = build_scene_map(workdir / "map", scenes, model, TOPIC)
    messages = []
    for scene in scenes:
        messages.append(raw_image_msg(scene, frame_id="overload"))
    collector = OutputCollector()
    node = start_node(map_dir, model, TOPIC, workdir / "node.log", extra=extra_params)
    results = []
    try:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)  # a camera's QoS
        pub = collector.node.create_publisher(Image, TOPIC, qos)
        wait_for_subscriber(pub, node, workdir / "node.log", timeout=120)
        for rate_hz, frames in phases:
            results.append(_phase(collector, pub, node.pid, messages, rate_hz, frames))
    finally:
        stop_process(node)
        collector.close()
    return results


def _phase(collector, pub, pid: int, messages: list, rate_hz: float, frames: int) -> dict:
    from tqdm import tqdm

    before = _settled_totals(collector)
    t_matches = len(collector.matches)
    sent: list[int] = []
    rss_start = None
    start = time.monotonic()
    for i in tqdm(range(frames), desc=f"overload {rate_hz:g} Hz", unit="frame", leave=False):
        time.sleep(max(0.0, start + i / rate_hz - time.monotonic()))
        msg = messages[i % len(messages)]
        # a live camera's stamp: unique, and the start of its latency
        now = collector.node.get_clock().now()
        msg.header.stamp = now.to_msg()
        pub.publish(msg)
        sent.append(now.nanoseconds)
        if i == frames // 4:  # after warm-up: allocator pools and DDS buffers have grown to size
            rss_start = _rss_mb(pid)
    seconds = time.monotonic() - start
    after = _settled_totals(collector)
    rss_end = _rss_mb(pid)
    delta = {
        k: after.get(k, 0) - before.get(k, 0)
        for k in ("received", "processed", "dropped", "bad", "failed")
    }
    received_matches = collector.matches[t_matches:]
    matches = [m for _, m in received_matches]
    stamps = [stamp_to_ns(m["header"]["stamp"]) for m in matches]
    sent_set = set(sent)
    end_to_end_ms = [(t - stamp) * 1e-6 for (t, _), stamp in zip(received_matches, stamps)]
    node_ms = [float(m["latency_ms"]["total"]) for m in matches]
    quarter = max(1, len(matches) // 4)
    return {
        "rate_hz": rate_hz,
        "frames": frames,
        "send_rate_hz": round(frames / seconds, 1),
        **delta,
        "accounted": (
            delta["received"]
            == delta["processed"] + delta["dropped"] + delta["bad"] + delta["failed"]
        ),
        "matches": len(matches),
        "stamps_ok": (
            len(matches) == delta["processed"]
            and all(s in sent_set for s in stamps)
            and all(a < b for a, b in zip(stamps, stamps[1:]))
        ),
        "rss_start_mb": round(rss_start or rss_end, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_pct": round(
            100.0 * (rss_end - (rss_start or rss_end)) / (rss_start or rss_end), 2
        ),
        "latency_p50_first_ms": round(_p50(end_to_end_ms[:quarter]), 2),
        "latency_p50_last_ms": round(_p50(end_to_end_ms[-quarter:]), 2),
        "node_latency_p50_first_ms": round(_p50(node_ms[:quarter]), 2),
        "node_latency_p50_last_ms": round(_p50(node_ms[-quarter:]), 2),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--rate", type=float, action="append",
                    help="frames per second of a phase (repeat; default: 60 and 300)")
    ap.add_argument("--frames", type=int, action="append",
                    help="frames of a phase (repeat, one per --rate; default: 5000)")
    ap.add_argument("--model", default="baseline", help="default: %(default)s")
    ap.add_argument("--workdir", type=Path, default=Path("overload_out"),
                    help="map and node log (default: %(default)s)")
    a = ap.parse_args(argv)
    rates = a.rate or [60.0, 300.0]
    frames = a.frames or [5000] * len(rates)
    if len(frames) != len(rates):
        ap.error("give one --frames per --rate")
    results = run_overload(a.workdir, tuple(zip(rates, frames)), a.model)
    for r in results:
        print(json.dumps(r))
    return 0 if all(r["accounted"] and r["stamps_ok"] and r["failed"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
