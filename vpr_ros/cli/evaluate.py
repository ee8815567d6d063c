"""`vpr-ros eval`: Recall@N and confidence of query images per pipeline configuration."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from vpr_ros.cli import options
from vpr_ros.errors import VprError

FAR = 3  # "off the map": farther than three thresholds (or frame tolerances, at least 3 frames)


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("eval",
                            help="Recall@1/5/10/20 and confidence of queries against a map, per "
                            "pipeline configuration",
                            description="Run query images through the node's pipeline once per "
                            "configuration (every --rerank with every --temporal): prints one "
                            "row each (Recall@N, precision and fraction of pose priors at "
                            "--min-confidence, AUC-PR, Extended Precision, expected calibration "
                            "error) and writes results.json, recall.png, precision_recall.png "
                            "and a reliability diagram per configuration; with --conditions, "
                            "also replays the queries reversed, shuffled, faster, with stops and "
                            "off the map.")
    options.add_query_args(parser)
    # Recall@20 needs 20 candidates per query
    options.add_pipeline_args(parser, several=("rerank", "temporal"), top_k=20)
    parser.add_argument("--threshold-m", type=float, default=25.0,
                        help="a match is right within this many metres (default: %(default)s)")
    parser.add_argument("--frame-tolerance", type=int,
                        help="instead of metres: right within this many frames (aligned "
                        "sequences)")
    parser.add_argument("--conditions", action="store_true",
                        help="also replay the queries under every condition of "
                        "vpr_ros.evaluation.conditions (in order, reversed, shuffled chunks, "
                        "double speed, stops, off the map) per configuration: prints a table "
                        "each and writes conditions/<configuration>/ (conditions.json, "
                        "reliability.png)")
    parser.add_argument("--out", type=Path, default=Path("eval_out"),
                        help="report directory (default: %(default)s)")
    return parser


def run(args: argparse.Namespace) -> int:
    from vpr_ros.evaluation.evaluate import (
        extract_queries,
        format_table,
        ground_truth,
        report_rows,
        run_configurations,
        write_report,
    )
    from vpr_ros.rerank import create_reranker
    from vpr_ros.localizer import LocalizerConfig
    from vpr_ros.maps.local_features import resolve_rerank

    vpr_map, extractor = options.map_and_extractor(args)
    reranks = list(dict.fromkeys(resolve_rerank(r, args.map) or "none" for r in args.rerank))
    needing_features = [r for r in reranks if r != "none"]
    if len(needing_features) > 1:
        raise VprError(
            f"one re-ranker per evaluation run, got {', '.join(needing_features)}; run eval once"
            " per re-ranker"
        )
    reranker = create_reranker(needing_features[0], extractor) if needing_features else None
    source = options.open_source(args, keyframes=False)
    queries, frames = extract_queries(
        source, extractor, reranker, args.odometry_from_poses, total=len(source)
    )
    positives, gt = ground_truth(vpr_map, frames, args.threshold_m, args.frame_tolerance)
    configs = [
        LocalizerConfig.from_parameters({**vars(args), "rerank": r, "temporal": t})
        for r in reranks for t in args.temporal
    ]
    results = run_configurations(vpr_map, extractor, queries, positives, gt, configs)
    print(format_table(report_rows(results)))
    written = write_report(results, gt, len(frames), args.out, {"map": str(args.map)})
    if args.conditions:
        tolerance = args.frame_tolerance
        far = None if tolerance is None else max(FAR * tolerance, FAR)
        far_positives, _ = ground_truth(vpr_map, frames, FAR * args.threshold_m, far)
        for name, (config, _) in results.items():
            written += _conditions(vpr_map, extractor, config, queries, positives, far_positives,
                                   args.out, name)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _conditions(vpr_map, extractor, config, queries, positives, far_positives, out: Path,
                name: str) -> list[Path]:
    """Replay the queries under every condition with ``config``; print and write the report."""
    from vpr_ros.evaluation.conditions import markdown_table, run_conditions, write_report
    from vpr_ros.evaluation.evaluate import file_name
    from vpr_ros.localizer import Localizer

    # The half map of "off the map" holds no local features: auto re-ranks wherever the map can.
    pipeline = config if config.rerank == "none" else replace(config, rerank="auto")
    folder = out / "conditions" / file_name(name)
    with tempfile.TemporaryDirectory(prefix="vpr_eval_conditions_") as work:  # the half map
        results = run_conditions(
            vpr_map, lambda m: Localizer(m, extractor, pipeline), queries.descriptors, positives,
            far_positives, Path(work), queries.local, queries.travelled_m,
        )
    report = write_report(results, folder, f"{name}: every condition")
    print(f"\nconditions, {name} (expected calibration error"
          f" {report['expected_calibration_error']}):\n{markdown_table(report['rows'])}")
    return [folder / "conditions.json", folder / "reliability.png"]
