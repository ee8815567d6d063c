"""Option groups the commands share, and what they open from the parsed options."""

from __future__ import annotations

import argparse
from pathlib import Path

from vpr_ros.errors import VprError
from vpr_ros.parameters import BY_NAME, PIPELINE, Parameter


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def checked(parameter: Parameter):
    """Return an argparse type that converts a flag's text and checks it against the table."""

    def convert(text: str):
        value = type(parameter.default)(text)  # ValueError: argparse names the type and the text
        if problem := parameter.problem(value):
            raise argparse.ArgumentTypeError(problem)
        return value

    convert.__name__ = parameter.type_name
    return convert


def add_pipeline_args(
    parser: argparse.ArgumentParser, several: tuple[str, ...] = (), **defaults
) -> None:
    """
    Add the pipeline's options of ``parameters.PARAMETERS`` as flags (``top_k``: ``--top-k``).

    With the node's defaults, so what a command runs is what the node runs, unless ``defaults``
    names a command's own. The options in ``several`` take several values (eval runs every
    combination).
    """
    group = parser.add_argument_group("pipeline (the node's parameters of the same names)")
    for p in PIPELINE:
        default = defaults.get(p.name, p.default)
        many = p.name in several
        group.add_argument(flag(p.name), type=checked(p), choices=p.choices or None,
                           nargs="+" if many else None, default=[default] if many else default,
                           help=p.description.replace("%", "%%") + f" (default: {default})")
    group.add_argument("--odometry-from-poses", action="store_true",
                       help="feed the filter the distance between consecutive query poses, as "
                       "odometry would")


def add_model_args(
    parser: argparse.ArgumentParser, model_help: str = "descriptor model (default: the map's)"
) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help=model_help)
    group.add_argument("--weights", help="official checkpoint file (DINOv2-based models)")
    for name, note in (
        ("backend", "torch-compile (bf16) is the fastest CPU path for ViTs"),
        ("precision", ""),
    ):
        p = BY_NAME[name]
        group.add_argument(flag(name), default=p.default, choices=p.choices,
                           help=f"default: %(default)s{'; ' + note if note else ''}")
    group.add_argument("--engine-cache-dir", type=Path,
                       help="exported ONNX / TensorRT engines (default: $VPR_ROS_CACHE_DIR or "
                       "~/.cache/vpr_ros)")


def add_bag_args(group, bag_help: str = "rosbag2 directory (sqlite3 or mcap); repeat for several"):
    """--bag (repeatable), --image-topic and --pose-topic: build-map, localize, eval and train."""
    group.add_argument("--bag", action="append", type=Path, help=bag_help)
    group.add_argument("--image-topic",
                       help="sensor_msgs/Image or CompressedImage topic in the bags")
    group.add_argument("--pose-topic",
                       help="NavSatFix, Odometry, PoseStamped or PoseWithCovarianceStamped topic")


def add_source_args(parser: argparse.ArgumentParser, keyframes: bool) -> None:
    group = parser.add_argument_group("images (a rosbag2 or a folder)")
    add_bag_args(group)
    group.add_argument("--images", type=Path,
                       help="image folder (VPR layout @east@north@zone@letter@lat@lon@.jpg, or "
                       "with --poses-csv)")
    group.add_argument("--poses-csv", type=Path,
                       help="CSV of file name and x,y (or lat,lon) for --images")
    if keyframes:
        group.add_argument("--min-distance", type=float, default=2.0,
                           help="keep a frame every this many metres of travel (default: "
                           "%(default)s); 0 keeps every frame")
        group.add_argument("--every-n", type=int, default=1,
                           help="without poses, keep every Nth frame (default: %(default)s)")


def add_query_args(parser: argparse.ArgumentParser) -> None:
    """Load a map and query images, with the map's model unless --model says otherwise."""
    parser.add_argument("--map", required=True, type=Path, help="map directory")
    add_source_args(parser, keyframes=False)
    add_model_args(parser)


def _pca_dim(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else text
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'auto', 'none' or a positive number of dims"
        )
    return int(text)


def add_index_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("search index")
    group.add_argument("--index", default="auto", choices=["auto", "flat", "hnsw", "ivfpq"],
                       help="faiss index (default: %(default)s: exact while the vectors fit 32 "
                       "MiB, else HNSW over 8-bit codes up to 250k places, else IVF-PQ; both "
                       "re-score their shortlist exactly)")
    group.add_argument("--pca-dim", type=_pca_dim, default="auto",
                       help="PCA of the descriptors to this many dims, learned from the map; "
                       "'none' keeps the model's (default: %(default)s: 1024 for maps too big "
                       "for exact search)")
    group.add_argument("--whiten", action="store_true",
                       help="whiten the PCA (divide each direction by its spread)")


def index_config(args: argparse.Namespace):
    from vpr_ros.search.faiss_index import IndexConfig

    return IndexConfig(args.index, pca_dim=args.pca_dim, whiten=args.whiten)


def open_source(args: argparse.Namespace, keyframes: bool, bags: list[Path] | None = None):
    """Open --bag (all of them, or only ``bags``) or --images."""
    from vpr_ros.maps.sources import BagSource, FolderSource

    if bool(args.bag) == bool(args.images):
        raise VprError("give either --bag (with --image-topic) or --images")
    min_distance = args.min_distance if keyframes else 0.0
    every_n = args.every_n if keyframes else 1
    if args.bag:
        if not args.image_topic:
            raise VprError(
                "--bag needs --image-topic (run with a wrong topic to see the bag's topics)"
            )
        return BagSource(
            bags or args.bag, args.image_topic, args.pose_topic, min_distance_m=min_distance,
            every_n=every_n,
        )
    return FolderSource(
        args.images, poses_csv=args.poses_csv, min_distance_m=min_distance, every_n=every_n
    )


def extractor(args: argparse.Namespace, model: str):
    from vpr_ros.inference.factory import create_extractor

    return create_extractor(
        model, args.weights, args.backend, args.precision, args.engine_cache_dir
    )


def map_and_extractor(args: argparse.Namespace):
    from vpr_ros.maps.mapdir import load_map, read_manifest

    described = extractor(args, args.model or read_manifest(args.map).model.name)
    return load_map(args.map, described.describe()), described
