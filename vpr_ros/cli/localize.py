"""`vpr-ros localize`: query images through the node's pipeline, one PlaceMatch JSON a line."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from vpr_ros.cli import options


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("localize", help="match query images against a map, without ROS",
                            description="Match every image of a bag topic or folder against a "
                            "map, in order, through the node's pipeline (re-ranking, temporal "
                            "filter, confidence); one JSON document per line with the fields of "
                            "the node's vpr_ros/msg/PlaceMatch (null where unknown).")
    options.add_query_args(parser)
    options.add_pipeline_args(parser)
    parser.add_argument("--out", type=Path, help="JSON-lines file (default: standard output)")
    return parser


def run(args: argparse.Namespace) -> int:
    from vpr_ros.localizer import Localizer, LocalizerConfig
    from vpr_ros.place_match import place_match_json

    vpr_map, extractor = options.map_and_extractor(args)
    localizer = Localizer(vpr_map, extractor, LocalizerConfig.from_parameters(vars(args)))
    out = open(args.out, "w") if args.out else sys.stdout
    try:
        previous = None
        for frame in options.open_source(args, keyframes=False):
            travelled = None
            if args.odometry_from_poses and previous is not None and frame.position is not None:
                travelled = math.dist(previous[:2], frame.position[:2])
            previous = frame.position if frame.position is not None else previous
            match = localizer.localize(
                frame.image, frame.stamp_ns, frame.frame_id or "camera", travelled_m=travelled
            )
            out.write(place_match_json(match) + "\n")
    finally:
        if args.out:
            out.close()
    return 0
