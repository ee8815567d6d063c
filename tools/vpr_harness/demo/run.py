"""
`make demo` (``python -m vpr_harness.demo.run``): the whole job for real, in processes over DDS.

1. bags: the user's, or a synthetic route rendered twice (map / query traversal);
2. a map from the first bag (`build_map`, the same code as `vpr-ros build-map`);
3. the `localize` node started from its entry point with config/localize.yaml;
4. the second bag replayed onto the camera topic at camera rate by another process;
5. /vpr/match and /vpr/pose_prior collected here; a report with recall, latency,
   drops and a trajectory plot, plus offline recall of the default and of raw pixels.

The synthetic query drive leaves the map for a stretch and is carried once elsewhere (route.py):
the report scores pose priors on the on-map frames, per off-map frame and after the jump.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from vpr_ros.temporal.seqslam import SequenceConfig
from vpr_harness.demo.plot import plot_trajectory
from vpr_harness.replay.dds_env import apply_loopback_dds_env
from vpr_harness.replay.processes import replay, start_node, stop_process
from vpr_ros.place_match import json_line
from vpr_ros.stamps import stamp_to_ns


SEQUENCE_LENGTH = 10  # frames, for the offline temporal-filtering row of the report


def summarize(
    matches: list[tuple[int, dict]],
    pose_priors: list,
    sent: list,
    query_xy: np.ndarray,
    map_xy: np.ndarray,
    threshold_m: float,
) -> dict:
    """
    Join matches and pose priors to sent frames by stamp and score them against the truth.

    Recall@1, pose-prior precision and fraction, latency: over all frames, and on the on-map
    frames (within ``threshold_m`` of a map place). ``off_map_prior_rate``: pose priors per frame
    farther than three thresholds from every map place. After each jump (consecutive frames
    farther apart than three thresholds) ``frames_to_recover``: frames from the first one after
    it to the first right pose prior (None: none came), and the wrong priors before that.
    """
    frame_of_stamp = {s: i for i, s, _ in sent}
    priors = {}  # frame -> (x, y, right)
    for _, msg in pose_priors:
        i = frame_of_stamp.get(stamp_to_ns(msg.header.stamp))
        if i is not None:
            x, y = msg.pose.pose.position.x, msg.pose.pose.position.y
            error = np.hypot(x - query_xy[i][0], y - query_xy[i][1])
            priors[i] = (x, y, bool(error <= threshold_m))
    rows = []
    for received_ns, m in matches:
        stamp = stamp_to_ns(m["header"]["stamp"])
        i = frame_of_stamp.get(stamp)
        if i is None or not m["candidates"] or not m["candidates"][0]["has_position"]:
            continue
        position = m["candidates"][0]["pose"]["position"]
        best = np.array([position["x"], position["y"]])
        rows.append(
            (i, best, (received_ns - stamp) * 1e-6, m["latency_ms"]["total"], m["confidence"])
        )
    if not rows:
        return {"frames_sent": len(sent), "frames_matched": 0}
    n = len(sent)
    truth = query_xy[:n]
    # UTM coordinates are ~1e6: subtract a common origin before the distances.
    origin = map_xy.mean(0)
    nearest = np.array(
        [np.linalg.norm(map_xy - origin - (q - origin), axis=1).min() for q in truth]
    )
    on_map, off_map = nearest <= threshold_m, nearest > 3 * threshold_m
    idx = np.array([r[0] for r in rows])
    best = np.stack([r[1] for r in rows])
    err = np.linalg.norm(best - query_xy[idx], axis=1)
    e2e = np.array([r[2] for r in rows])
    node = np.array([r[3] for r in rows])

    def prior_scores(frames: np.ndarray) -> dict:
        with_prior = [i for i in frames if i in priors]
        return {
            "pose_priors": len(with_prior),
            "pose_prior_precision": (
                float(np.mean([priors[i][2] for i in with_prior])) if with_prior else None
            ),
            "pose_prior_fraction": len(with_prior) / len(frames) if len(frames) else None,
        }

    jumps = [int(j) for j in np.flatnonzero(np.linalg.norm(np.diff(truth, axis=0), axis=1)
                                            > 3 * threshold_m) + 1]
    recover, wrong_after = [], []
    for j in jumps:
        right = [i for i in range(j, n) if i in priors and priors[i][2]]
        recover.append(right[0] - j if right else None)
        wrong_after.append(
            sum(not priors[i][2] for i in range(j, right[0] if right else n) if i in priors)
        )
    off = np.flatnonzero(off_map)
    on_rows = on_map[idx]
    return {
        "frames_sent": n,
        "frames_matched": len(rows),
        "recall_at_1": float(np.mean(err <= threshold_m)),
        "threshold_m": threshold_m,
        "median_error_m": float(np.median(err)),
        **prior_scores(np.arange(n)),
        "on_map": {
            "frames": int(on_map.sum()),
            "recall_at_1": float(np.mean(err[on_rows] <= threshold_m)) if on_rows.any() else None,
            **prior_scores(np.flatnonzero(on_map)),
        },
        "off_map_frames": len(off),
        "off_map_pose_priors": sum(i in priors for i in off),
        "off_map_prior_rate": sum(i in priors for i in off) / len(off) if len(off) else None,
        "jump_frames": jumps,
        "frames_to_recover": recover,
        "wrong_priors_after_jump": wrong_after,
        "latency_end_to_end_ms": {
            "p50": float(np.percentile(e2e, 50)),
            "p95": float(np.percentile(e2e, 95)),
        },
        "latency_node_pipeline_ms": {
            "p50": float(np.percentile(node, 50)),
            "p95": float(np.percentile(node, 95)),
        },
        "_matched": dict(zip(idx.tolist(), best)),
        "_right": dict(zip(idx.tolist(), (err <= threshold_m).tolist())),
        "_off_map": off_map,
        "_priors": priors,
    }


def _map_and_offline_rows(
    model: str, weights: str | None, map_bag: Path, query_bag: Path, a, map_dir: Path
):
    """
    Build a map with ``model`` and run every query frame through the pipeline offline (no ROS).

    Once per configuration: plain, the place filter (hmm) and SeqSLAM with velocities from
    the routes' spacing.
    """
    from vpr_ros.evaluation.evaluate import (
        extract_queries,
        ground_truth,
        report_rows,
        run_configurations,
    )
    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.localizer import LocalizerConfig
    from vpr_ros.maps.build import build_map
    from vpr_ros.maps.mapdir import load_map
    from vpr_ros.maps.sources import BagSource

    extractor = create_extractor(model, weights)
    build_map(
        BagSource([map_bag], a.image_topic, a.pose_topic, min_distance_m=a.min_distance),
        extractor,
        map_dir,
    )
    vpr_map = load_map(map_dir, extractor.describe())
    source = BagSource([query_bag], a.image_topic, a.pose_topic, min_distance_m=0.0)
    queries, frames = extract_queries(source, extractor, total=len(source))
    positives, gt = ground_truth(vpr_map, frames, a.threshold_m, None)
    sequence = _sequence_config([f.position for f in frames], [p.position for p in vpr_map.places])
    configs = [
        LocalizerConfig(top_k=20, temporal="none"),
        LocalizerConfig(top_k=20, temporal="hmm"),
        LocalizerConfig(top_k=20, temporal="seqslam", sequence=sequence),
    ]
    return (
        vpr_map,
        frames,
        report_rows(run_configurations(vpr_map, extractor, queries, positives, gt, configs)),
        gt,
    )


def _sequence_config(query_positions, map_positions) -> SequenceConfig:
    """Return velocities (map places per query frame) around the routes' ratio of steps, +-30 %."""
    def step(p):
        return float(np.median(np.linalg.norm(np.diff(np.asarray(p)[:, :2], axis=0), axis=1)))

    v = step(query_positions) / step(map_positions)
    return SequenceConfig(length=SEQUENCE_LENGTH, min_velocity=0.7 * v, max_velocity=1.3 * v)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vpr_harness.demo.run",
        description=(
            "The whole job end to end: bags -> map -> ROS 2 node -> matches -> report. With no"
            " bags, renders a synthetic route twice (different light and appearance), writes both"
            " as rosbag2, builds a map from the first, starts the localize node, replays the"
            " second at camera rate and reports recall, latency, drops and a trajectory plot."
        ),
    )
    parser.add_argument("--bag", type=Path, help="map bag (default: synthetic route)")
    parser.add_argument(
        "--query-bag", type=Path, help="query bag replayed to the node (default: synthetic route)"
    )
    parser.add_argument(
        "--image-topic",
        default="/camera/image_raw",
        help="Image topic or a CompressedImage topic ending in /compressed (default: %(default)s)",
    )
    parser.add_argument("--pose-topic", default="/gps/fix", help="default: %(default)s")
    parser.add_argument("--model", default="baseline", help="default: %(default)s")
    parser.add_argument("--weights", help="official checkpoint file (DINOv2-based models)")
    parser.add_argument("--threshold-m", type=float, help="a match is right within this many"
                        " metres (default: 10 on the synthetic route, 25 on your bags)")
    parser.add_argument("--min-distance", type=float, default=2.0,
                        help="map keyframe spacing, metres (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=400,
                        help="synthetic frames per traversal (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="replay rate in Hz (default: the bag's own rate)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"),
                        help="where bags, map and report go (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from vpr_ros.evaluation.evaluate import format_table
    from vpr_ros.logs import configure_logging

    a = parse_args(argv)
    configure_logging(False)

    apply_loopback_dds_env()  # before this process's collector starts rclpy
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if bool(a.bag) != bool(a.query_bag):
        raise SystemExit(
            "demo: give both --bag and --query-bag, or neither for the synthetic route"
        )
    if a.bag:
        map_bag, query_bag, true_query_xy = a.bag, a.query_bag, None
    else:
        from vpr_harness.demo.route import (
            COMPRESSED_CAMERA_TOPIC,
            RECOMMENDED_MATCH_RADIUS_M,
            demo_traversals,
            local_to_utm,
            write_demo_bags,
        )

        print(f"[1/5] rendering the synthetic route: 2 traversals x {a.frames} frames", flush=True)
        shutil.rmtree(out / "bags", ignore_errors=True)  # the demo owns its output directory
        # JPEG, as robots usually record: 38 MB instead of 700 MB of raw frames.
        map_bag, query_bag = write_demo_bags(
            out / "bags", frames=a.frames, compressed=True, excursions=True
        )
        # The truth, not GPS: a camera frame between the fixes before and after the jump would
        # be interpolated halfway between the two places.
        true_query_xy = local_to_utm(
            demo_traversals(a.frames, excursions=True)[1].frame_positions()
        )
        a.image_topic = COMPRESSED_CAMERA_TOPIC
        a.threshold_m = a.threshold_m or RECOMMENDED_MATCH_RADIUS_M
    a.threshold_m = a.threshold_m or 25.0

    print(
        f"[2/5] building the map from {map_bag} and scoring the queries offline ({a.model} and raw"
        " pixels)",
        flush=True,
    )
    vpr_map, q_frames, offline, gt = _map_and_offline_rows(
        a.model, a.weights, map_bag, query_bag, a, out / "map"
    )
    offline.update(
        _map_and_offline_rows("raw-pixels", None, map_bag, query_bag, a, out / "map_raw_pixels")[2]
    )
    print(format_table(offline), flush=True)
    query_xy = (
        np.array([f.position[:2] for f in q_frames]) if true_query_xy is None else true_query_xy
    )
    map_xy = np.array([p.position[:2] for p in vpr_map.places])

    runs = {}
    for step, (label, params) in enumerate(
        (("plain", ["-p", "temporal:=none"]), ("best", [])), start=3
    ):
        print(
            f"[{step}/5] the localize node, {label} configuration"
            f" ({' '.join(params[1::2]) or 'defaults'}): replaying the query bag onto the camera"
            " topic at camera rate",
            flush=True,
        )
        runs[label] = _run_node(vpr_map.path, query_bag, query_xy, map_xy, a, out / label, params)

    print("[5/5] report", flush=True)
    best = runs["best"]
    report = {k: v for k, v in best.items() if not k.startswith("_")}
    report.update({
        "configuration": "node defaults (config/localize.yaml)",
        "plain": {k: v for k, v in runs["plain"].items() if not k.startswith("_")},
        "offline": offline,
        "offline_recall": {k: v["recall"] for k, v in offline.items()},
        "ground_truth": gt,
        "map_places": len(vpr_map),
    })
    if "_matched" in best:
        png = plot_trajectory(
            map_xy,
            query_xy,
            best["_matched"],
            best["_right"],
            best["_off_map"],
            best["_priors"],
            best["jump_frames"],
            out / "trajectory.png",
            f"{a.model}, node defaults: R@1 {best['recall_at_1']:.2f} within {a.threshold_m:g} m",
        )
        report["trajectory_png"] = str(png)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _print_report(report)
    return 0 if best.get("frames_matched") else 1


def _run_node(
    map_path: Path,
    query_bag: Path,
    query_xy: np.ndarray,
    map_xy: np.ndarray,
    a,
    out: Path,
    params: list[str],
) -> dict:
    """
    Run the node in its own process and replay the query bag onto its camera topic.

    The node gets ``params`` on top of config/localize.yaml; another process replays the query
    bag. Returns what came back on /vpr/match and /vpr/pose_prior, summarized.
    """
    from vpr_harness.replay.collector import OutputCollector

    out.mkdir(parents=True, exist_ok=True)
    collector = OutputCollector()
    node = start_node(map_path, a.model, a.image_topic, out / "node.log", a.weights, extra=params)
    try:
        # Matches published before this process has discovered the node's publisher are lost (the
        # first 9-10 frames in some runs): wait for it, as the player waits for the subscription.
        if not collector.wait_for(lambda: collector.node.count_publishers("/vpr/match") > 0, 120):
            raise SystemExit(f"demo: the node published no vpr/match; its log: {out / 'node.log'}")
        played = replay(query_bag, a.image_topic, out / "sent.json", a.rate)
        if played.returncode != 0:
            raise SystemExit(
                f"demo: the player failed: {played.stdout}{played.stderr}\nnode log:"
                f" {out / 'node.log'}"
            )
        sent = json.loads((out / "sent.json").read_text())["frames"]
        collector.wait_for(lambda: len(collector.matches) >= len(sent), timeout=10.0)
        time.sleep(1.5)  # one more diagnostics period
    finally:
        code = stop_process(node)
        collector.close()
    with open(out / "matches.jsonl", "w") as f:
        f.writelines(json_line(m) + "\n" for _, m in collector.matches)
    summary = summarize(
        collector.matches, collector.pose_priors, sent, query_xy, map_xy, a.threshold_m
    )
    diag = collector.diagnostics[-1] if collector.diagnostics else {}
    summary.update(
        {
            "frames_dropped_by_node": int(diag.get("frames_dropped", -1)),
            "frames_bad": int(diag.get("frames_bad", -1)),
            "node_exit_code": code,
            "params": params,
        }
    )
    return summary


def _print_report(r: dict) -> None:
    print("\n=== vpr_ros demo ===")
    for label, run in (("plain (temporal none)", r["plain"]), ("best (node defaults)", r)):
        print(
            f"{label}: frames sent {run['frames_sent']}, matched {run.get('frames_matched', 0)},"
            f" dropped by the node {run['frames_dropped_by_node']}, bad {run['frames_bad']}"
        )
        if "recall_at_1" in run:
            lat, node = run["latency_end_to_end_ms"], run["latency_node_pipeline_ms"]
            precision = _fmt(run["pose_prior_precision"])
            print(
                f"  Recall@1 over DDS {run['recall_at_1']:.3f} (within {run['threshold_m']:g} m;"
                f" median error {run['median_error_m']:.1f} m); pose priors {run['pose_priors']}"
                f" ({run['pose_prior_fraction']:.0%} of frames), {precision} of them within"
                f" {run['threshold_m']:g} m"
            )
            print(
                f"  latency publish->match p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms; node"
                f" pipeline p50 {node['p50']:.1f} ms, p95 {node['p95']:.1f} ms"
            )
            on = run["on_map"]
            print(
                f"  on the map ({on['frames']} frames): Recall@1 {_fmt(on['recall_at_1'])}, pose"
                f" priors on {_fmt(on['pose_prior_fraction'])} of them,"
                f" {_fmt(on['pose_prior_precision'])} right; off the map"
                f" ({run['off_map_frames']} frames): {run['off_map_pose_priors']} pose priors"
                f" (rate {_fmt(run['off_map_prior_rate'])}); after the jump at frames"
                f" {run['jump_frames']}: frames to the first right prior"
                f" {run['frames_to_recover']}, wrong priors before it"
                f" {run['wrong_priors_after_jump']}"
            )
    for name, row in r["offline"].items():
        print(f"offline {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["recall"].items()))
    if "trajectory_png" in r:
        print(f"trajectory plot: {r['trajectory_png']}")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
