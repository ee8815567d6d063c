"""
Node overhead: publish -> /vpr/match latency over DDS, divided by bare descriptor + search latency.

Both are measured in this run on the same query frames: the bare one by calling
Localizer.localize in this process, the node one by replaying the query bag to
the `localize` node (its own process) slowly enough that no frame queues.
Goal (issue 2): ratio <= 1.10 at p50 with the baseline model.

    python bench/bench_node.py [--model baseline] [--frames 150] [--rate 4]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from common import IMAGE_TOPIC, POSE_TOPIC, demo_bags, percentiles

from vpr_ros.stamps import stamp_to_ns  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--model", default="baseline")
    ap.add_argument("--frames", type=int, default=150, help="frames per traversal")
    ap.add_argument(
        "--rate", type=float, default=4.0, help="replay rate, Hz (slow enough that nothing queues)"
    )
    a = ap.parse_args()

    from vpr_ros.replay.processes import replay, start_node, stop_process
    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.localizer import Localizer
    from vpr_ros.maps.build import build_map
    from vpr_ros.maps.mapdir import load_map
    from vpr_ros.maps.sources import BagSource
    from vpr_ros.replay.collector import OutputCollector

    work, map_bag, query_bag = demo_bags(a.frames)
    extractor = create_extractor(a.model)
    map_dir = build_map(
        BagSource([map_bag], IMAGE_TOPIC, POSE_TOPIC, min_distance_m=2.0), extractor, work / "map"
    )
    localizer = Localizer(load_map(map_dir, extractor.describe()), extractor)

    frames = [f.image for f in BagSource([query_bag], IMAGE_TOPIC)]
    localizer.localize(frames[0])  # warm-up

    def bare_latency(period_s: float) -> list[float]:
        out = []
        for img in frames:
            t0 = time.perf_counter()
            localizer.localize(img)
            out.append((time.perf_counter() - t0) * 1e3)
            time.sleep(max(0.0, period_s - (time.perf_counter() - t0)))
        return out

    # Back to back (warm caches) and at the replay cadence, as the node sees frames (idle gaps cool
    # them).
    warm, bare = bare_latency(0.0), bare_latency(1.0 / a.rate)

    collector = OutputCollector()
    node = start_node(map_dir, a.model, IMAGE_TOPIC, work / "node.log")
    try:
        played = replay(query_bag, IMAGE_TOPIC, work / "sent.json", rate=a.rate)
        assert played.returncode == 0, played.stdout + played.stderr
        sent = json.loads((work / "sent.json").read_text())["frames"]
        collector.wait_for(lambda: len(collector.matches) >= len(sent), 10)
    finally:
        stop_process(node)
        collector.close()
    stamps = {s for _, s, _ in sent}
    # first frame warms the node
    e2e = [
        (t - stamp_to_ns(m["stamp"])) * 1e-6
        for t, m in collector.matches
        if stamp_to_ns(m["stamp"]) in stamps
    ][1:]
    node_pipeline = [m["latency_ms"]["total"] for _, m in collector.matches][1:]
    w, b, n, p = percentiles(warm), percentiles(bare), percentiles(e2e), percentiles(node_pipeline)
    print(
        f"model {a.model} ({extractor.backend}/{extractor.precision}), {len(frames)} query frames,"
        f" replay {a.rate} Hz, {len(e2e) + 1}/{len(sent)} matched"
    )
    print("| latency (ms) | p50 | p95 |\n|---|---|---|")
    print(
        f"| bare preprocess + descriptor + search, back to back | {w['p50']:.2f} |"
        f" {w['p95']:.2f} |"
    )
    print(
        f"| bare preprocess + descriptor + search, at the replay cadence | {b['p50']:.2f} |"
        f" {b['p95']:.2f} |"
    )
    print(f"| node pipeline (decode + descriptor + search) | {p['p50']:.2f} | {p['p95']:.2f} |")
    print(f"| publish -> /vpr/match received (DDS) | {n['p50']:.2f} | {n['p95']:.2f} |")
    stages = {
        k: np.median([m["latency_ms"][k] for _, m in collector.matches[1:]])
        for k in collector.matches[-1][1]["latency_ms"]
    }
    print("node stages, median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(
        f"ratio node / bare at the same cadence: p50 {n['p50'] / b['p50']:.3f}, p95"
        f" {n['p95'] / b['p95']:.3f} (goal p50 <= 1.10)"
    )
    print(
        f"ratio node / bare back to back: p50 {n['p50'] / w['p50']:.3f}; node overhead p50"
        f" {n['p50'] - b['p50']:.2f} ms"
    )


if __name__ == "__main__":
    main()
