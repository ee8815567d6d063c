"""
The `vpr-ros` command: build and inspect maps, localize and evaluate offline, export models.

Thin: every subcommand parses its options and calls one pipeline function.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from vpr_ros.errors import VprError
from vpr_ros.inference import BACKENDS, PRECISIONS
from vpr_ros.logs import configure_logging

log = logging.getLogger("vpr_ros")


def _add_model_args(
    p: argparse.ArgumentParser,
    default_model: str | None = "baseline",
    model_help: str | None = None,
) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=default_model,
        help=model_help or (
            "descriptor model (default: %(default)s)"
            if default_model
            else "descriptor model (default: the map's model)"
        ),
    )
    g.add_argument("--weights", help="official checkpoint file (DINOv2-based models)")
    g.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="default: %(default)s; torch-compile (bf16) is the fastest CPU path for ViTs",
    )
    g.add_argument("--precision", default="fp32", choices=PRECISIONS, help="default: %(default)s")
    g.add_argument(
        "--engine-cache-dir",
        type=Path,
        help="exported ONNX / TensorRT engines (default: $VPR_ROS_CACHE_DIR or ~/.cache/vpr_ros)",
    )


def _add_source_args(p: argparse.ArgumentParser, keyframes: bool) -> None:
    g = p.add_argument_group("images (a rosbag2 or a folder)")
    g.add_argument(
        "--bag",
        action="append",
        type=Path,
        help="rosbag2 directory (sqlite3 or mcap); repeat for several",
    )
    g.add_argument("--image-topic", help="sensor_msgs/Image or CompressedImage topic in the bag")
    g.add_argument(
        "--pose-topic", help="NavSatFix, Odometry, PoseStamped or PoseWithCovarianceStamped topic"
    )
    g.add_argument(
        "--images",
        type=Path,
        help="image folder (VPR layout @east@north@zone@letter@lat@lon@.jpg, or with --poses-csv)",
    )
    g.add_argument(
        "--poses-csv", type=Path, help="CSV of file name and x,y (or lat,lon) for --images"
    )
    if keyframes:
        g.add_argument(
            "--min-distance",
            type=float,
            default=2.0,
            help=(
                "keep a frame every this many metres of travel (default: %(default)s); 0 keeps"
                " every frame"
            ),
        )
        g.add_argument(
            "--every-n",
            type=int,
            default=1,
            help="without poses, keep every Nth frame (default: %(default)s)",
        )


def _pca_dim(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else text
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'auto', 'none' or a positive number of dims"
        )
    return int(text)


def _add_index_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search index")
    g.add_argument(
        "--index",
        default="auto",
        choices=["auto", "flat", "hnsw", "ivfpq"],
        help=(
            "faiss index (default: %(default)s: exact while the vectors fit 32 MiB, else HNSW over"
            " 8-bit codes up to 250k places, else IVF-PQ; both re-score their shortlist exactly)"
        ),
    )
    g.add_argument(
        "--pca-dim",
        type=_pca_dim,
        default="auto",
        help=(
            "PCA of the descriptors to this many dims, learned from the map; 'none' keeps the"
            " model's (default: %(default)s: 1024 for maps too big for exact search)"
        ),
    )
    g.add_argument(
        "--whiten",
        action="store_true",
        help="whiten the PCA (divide each direction by its spread)",
    )


def _index_config(a: argparse.Namespace):
    from vpr_ros.index.faiss_index import IndexConfig

    return IndexConfig(a.index, pca_dim=a.pca_dim, whiten=a.whiten)


def _add_pipeline_args(p: argparse.ArgumentParser, several: bool) -> None:
    """
    Turn --rerank / --temporal into the node's parameters.

    Eval takes several and runs every combination.
    """
    from vpr_ros.confidence import DEFAULT_MIN_CONFIDENCE
    from vpr_ros.index import TEMPORAL_FILTERS

    g = p.add_argument_group("pipeline (as the node's parameters)")
    many = {"nargs": "+"} if several else {}
    g.add_argument(
        "--rerank",
        default=["none"] if several else "none",
        **many,
        help=(
            "re-ranker of the global top candidates: none, auto (the one whose features the map"
            " holds) or a re-ranker's name, e.g. fol (default: %(default)s)"
        ),
    )
    g.add_argument(
        "--rerank-top-k", type=int, default=10, help="candidates re-ranked (default: %(default)s)"
    )
    g.add_argument(
        "--temporal",
        default=["none", "hmm"] if several else "hmm",
        choices=TEMPORAL_FILTERS,
        **many,
        help="temporal filter over the frame sequence (default: %(default)s)",
    )
    g.add_argument(
        "--odometry-from-poses",
        action="store_true",
        help="feed the filter the distance between consecutive query poses, as odometry would",
    )
    g.add_argument(
        "--min-confidence",
        type=float,
        default=DEFAULT_MIN_CONFIDENCE,
        help="confidence at or above which a pose prior is given (default: %(default)s)",
    )


def _add_query_args(p: argparse.ArgumentParser) -> None:
    """Load a map and query images, with the map's model unless --model says otherwise."""
    p.add_argument("--map", required=True, type=Path, help="map directory")
    _add_source_args(p, keyframes=False)
    _add_model_args(p, default_model=None)


def _open_source(a: argparse.Namespace, keyframes: bool, bags: list[Path] | None = None):
    """Open --bag (all of them, or only ``bags``) or --images."""
    from vpr_ros.maps.sources import BagSource, FolderSource

    if bool(a.bag) == bool(a.images):
        raise VprError("give either --bag (with --image-topic) or --images")
    min_distance = a.min_distance if keyframes else 0.0
    every_n = a.every_n if keyframes else 1
    if a.bag:
        if not a.image_topic:
            raise VprError(
                "--bag needs --image-topic (run with a wrong topic to see the bag's topics)"
            )
        return BagSource(
            bags or a.bag, a.image_topic, a.pose_topic, min_distance_m=min_distance,
            every_n=every_n,
        )
    return FolderSource(
        a.images, poses_csv=a.poses_csv, min_distance_m=min_distance, every_n=every_n
    )


def _extractor(a: argparse.Namespace, model: str | None = None):
    from vpr_ros.inference.factory import create_extractor

    return create_extractor(
        model or a.model, a.weights, a.backend, a.precision, a.engine_cache_dir
    )


def _map_and_extractor(a: argparse.Namespace):
    from vpr_ros.maps.mapdir import load_map, read_manifest

    extractor = _extractor(a, a.model or read_manifest(a.map)["model"]["name"])
    return load_map(a.map, extractor.describe()), extractor


def cmd_build_map(a: argparse.Namespace) -> int:
    from vpr_ros.maps.local_features import stored_reranker
    from vpr_ros.maps.mapdir import read_manifest

    if a.append and (a.index != "auto" or a.pca_dim != "auto" or a.whiten):
        raise VprError(
            "--append keeps the map's index and PCA (its places stay in their search space):"
            f" leave out --index/--pca-dim/--whiten, then run `vpr-ros build-index {a.out} ...`"
            " to change them"
        )
    if a.ray_address and a.workers is None:
        raise VprError("--ray-address needs --workers N (how many Ray workers to run)")
    held = read_manifest(a.out) if a.append else None
    model = a.model or (held["model"]["name"] if held else "baseline")
    rerank = a.rerank or ((stored_reranker(a.out) or "none") if held else "none")
    rerank = None if rerank == "none" else rerank
    if a.workers is None:
        path, stats = _build_in_process(a, model, rerank)
    else:
        path, stats = _build_on_ray(a, model, rerank)
    count = read_manifest(path)["place_count"]
    print(f"{'appended to' if a.append else 'map written to'} {path}: {count} places")
    skipped = "\n".join(f"  {line}" for line in stats.report().splitlines())
    print(f"skipped while reading:\n{skipped}")
    return 0


def _write_built(a: argparse.Namespace, shards, model: dict, sources: list, local):
    """Write a fresh map, or grow the one at --out with --append."""
    from vpr_ros.maps.append import append_to_map
    from vpr_ros.maps.build import describe_source, write_shards

    if a.append:
        described = [d for s in sources for d in describe_source(s)]
        return append_to_map(a.out, shards, model, described, a.allow_no_poses, local)
    return write_shards(a.out, shards, model, _index_config(a), a.allow_no_poses, local)


def _build_in_process(a: argparse.Namespace, model: str, rerank: str | None):
    from vpr_ros.index.rerank import create_reranker
    from vpr_ros.maps.build import extract_shard

    source = _open_source(a, keyframes=True)
    extractor = _extractor(a, model)
    reranker = create_reranker(rerank, extractor) if rerank else None
    return _write_built(
        a,
        lambda writer: [extract_shard(source, extractor, a.batch_size, reranker, writer)],
        extractor.describe(),
        [source],
        reranker.describe() if reranker else None,
    )


def _build_on_ray(a: argparse.Namespace, model: str, rerank: str | None):
    from vpr_ros.maps.distributed import ExtractorSpec, RayExtraction

    # one task per bag; a folder is one task
    sources = [_open_source(a, True, [bag]) for bag in a.bag] if a.bag else [_open_source(a, True)]
    spec = ExtractorSpec(
        model,
        a.weights,
        a.backend,
        a.precision,
        str(a.engine_cache_dir) if a.engine_cache_dir else None,
    )
    with RayExtraction(spec, a.workers, a.batch_size, rerank, a.ray_address, a.verbose) as ray:
        return _write_built(a, ray.shards(sources), ray.model, sources, ray.local_description)


def cmd_build_index(a: argparse.Namespace) -> int:
    from vpr_ros.maps.mapdir import read_manifest, rebuild_index

    manifest = read_manifest(rebuild_index(a.map, _index_config(a)))
    index, pca = manifest["index"], manifest["index"]["pca"]
    pca_text = (
        f", PCA {pca['input_dim']}->{pca['output_dim']}{' whitened' if pca['whiten'] else ''}"
        if pca
        else ""
    )
    print(
        f"rebuilt {a.map}: {index['type']} index over {manifest['place_count']} places{pca_text}"
    )
    return 0


def _localizer_config(a: argparse.Namespace, rerank: str, temporal: str, top_k: int):
    from vpr_ros.localizer import LocalizerConfig

    return LocalizerConfig(
        top_k=top_k,
        rerank=rerank,
        rerank_top_k=a.rerank_top_k,
        temporal=temporal,
        min_confidence=a.min_confidence,
    )


def cmd_localize(a: argparse.Namespace) -> int:
    from vpr_ros.localizer import Localizer
    from vpr_ros.place_match import place_match_json

    vpr_map, extractor = _map_and_extractor(a)
    localizer = Localizer(vpr_map, extractor, _localizer_config(a, a.rerank, a.temporal, a.top_k))
    out = open(a.out, "w") if a.out else sys.stdout
    try:
        previous = None
        for frame in _open_source(a, keyframes=False):
            travelled = None
            if a.odometry_from_poses and previous is not None and frame.position is not None:
                travelled = math.dist(previous[:2], frame.position[:2])
            previous = frame.position if frame.position is not None else previous
            match = localizer.localize(
                frame.image, frame.stamp_ns, frame.frame_id or "camera", travelled_m=travelled
            )
            out.write(place_match_json(match) + "\n")
    finally:
        if a.out:
            out.close()
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from vpr_ros.evaluation.evaluate import (
        extract_queries,
        format_table,
        ground_truth,
        report_rows,
        run_configurations,
        write_report,
    )
    from vpr_ros.index.rerank import create_reranker
    from vpr_ros.maps.local_features import stored_reranker

    vpr_map, extractor = _map_and_extractor(a)
    reranks = list(
        dict.fromkeys(stored_reranker(a.map) or "none" if r == "auto" else r for r in a.rerank)
    )
    needing_features = [r for r in reranks if r != "none"]
    if len(needing_features) > 1:
        raise VprError(
            f"one re-ranker per evaluation run, got {', '.join(needing_features)}; run eval once"
            " per re-ranker"
        )
    reranker = create_reranker(needing_features[0], extractor) if needing_features else None
    source = _open_source(a, keyframes=False)
    queries, frames = extract_queries(
        source, extractor, reranker, a.odometry_from_poses, total=len(source)
    )
    positives, gt = ground_truth(vpr_map, frames, a.threshold_m, a.frame_tolerance)
    configs = [_localizer_config(a, r, t, 20) for r in reranks for t in a.temporal]
    results = run_configurations(vpr_map, extractor, queries, positives, gt, configs)
    print(format_table(report_rows(results)))
    written = write_report(results, gt, len(frames), Path(a.out), {"map": str(a.map)})
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_inspect_map(a: argparse.Namespace) -> int:
    from vpr_ros.errors import MapError
    from vpr_ros.maps.mapdir import load_map, read_manifest

    print(f"map        {a.map}")
    try:
        manifest = read_manifest(a.map)
        m = manifest["model"]
        print(
            f"id         {manifest['map_id']}\ncreated    {manifest['created']}\nplaces    "
            f" {manifest['place_count']}\nmodel      {m['name']} (fingerprint {m['fingerprint']},"
            f" {m['dim']}-D, input {m['input_size']})\nindex      {manifest['index']['type']}"
            f" {json.dumps(manifest['index']['params'])}, {manifest['index']['dim']}-D"
        )
        if pca := manifest["index"]["pca"]:
            print(
                f"pca        {pca['input_dim']} ->"
                f" {pca['output_dim']}{' whitened' if pca['whiten'] else ''},"
                f" {pca['explained_variance']:.1%} of the variance kept"
            )
        for s in manifest["sources"]:
            print(f"source     {json.dumps(s)}")
        # "verifies" means exactly: the loader the node and localize use accepts it
        load_map(a.map)
    except MapError as e:
        print(f"verifies   NO: {e}")
        return 1
    print("verifies   yes")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from vpr_ros.models.load import load_model

    net, spec, fingerprint = load_model(a.model, a.weights)
    if a.format == "onnx":
        from vpr_ros.inference.onnx_export import write_onnx

        out = write_onnx(net, spec, a.precision, a.out)
        if a.check_images and a.precision != "fp16":  # fp16 graphs need a GPU provider to run
            from vpr_ros.imaging import image_files, read_rgb
            from vpr_ros.inference.parity import parity_check

            paths = image_files(a.check_images)
            if not paths:
                raise VprError(
                    f"no images in {a.check_images} for the parity check; give a folder of camera"
                    " images"
                )
            print(
                f"parity torch fp32 vs {out.name}:"
                f" {parity_check(net, spec, out, [read_rgb(p) for p in paths])}"
            )
    else:
        from vpr_ros.inference.onnx_export import cached_onnx
        from vpr_ros.inference.tensorrt_backend import build_engine_file

        onnx_path = cached_onnx(net, spec, fingerprint, "fp32", a.engine_cache_dir)
        out = build_engine_file(onnx_path, spec, a.precision, a.out, calib_dir=a.calib_images)
    print(f"wrote {out} ({spec.name}, {a.precision}, fingerprint {fingerprint})")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from vpr_ros.training.run import run_training

    return run_training(a)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpr-ros", description=__doc__.strip().splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "build-map",
        help="build a map from rosbags or an image folder",
        description=(
            "Build a map directory (faiss index, places, descriptors, manifest) from rosbag2 files"
            " or an image folder. Written atomically."
        ),
    )
    _add_source_args(p, keyframes=True)
    _add_model_args(
        p, None, "descriptor model (default: baseline; with --append the map's model)"
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="map directory to write (replaced only when the build succeeds)",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help=(
            "add the bags (or folder) to the map at --out: only the new frames are extracted,"
            " with the map's model, PCA, index settings and re-ranker; the map is replaced only"
            " when the grown one is complete"
        ),
    )
    g = p.add_argument_group("distributed (Ray)")
    g.add_argument(
        "--workers",
        type=int,
        help=(
            "extract on this many Ray workers, one bag per task, each loading the model once"
            " (default: in this process)"
        ),
    )
    g.add_argument(
        "--ray-address",
        help=(
            "join this Ray cluster (HEAD_IP:6379, after `ray start --head --node-ip-address"
            " HEAD_IP` there and `ray start --address HEAD_IP:6379` on each worker node; bags"
            " and weights at the same paths on every node); default: a private Ray on"
            " 127.0.0.1 for this build"
        ),
    )
    _add_index_args(p)
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="images per inference batch (default: %(default)s)",
    )
    p.add_argument(
        "--allow-no-poses",
        action="store_true",
        help=(
            "write a map even when no place has a position (it can match places but never"
            " localize)"
        ),
    )
    p.add_argument(
        "--rerank",
        help=(
            "also store this re-ranker's local features of every place (e.g. fol with a FoL model"
            " on backend torch), so the node and eval can re-rank with it (default: none; with"
            " --append the map's)"
        ),
    )
    p.set_defaults(func=cmd_build_map)

    p = sub.add_parser(
        "localize",
        help="match query images against a map, without ROS",
        description=(
            "Match every image of a bag topic or folder against a map, in order, through the"
            " node's pipeline (re-ranking, temporal filter, confidence); one JSON document per"
            " line with the fields of the node's vpr_ros/msg/PlaceMatch (null where unknown)."
        ),
    )
    _add_query_args(p)
    _add_pipeline_args(p, several=False)
    p.add_argument(
        "--top-k", type=int, default=5, help="candidates per query (default: %(default)s)"
    )
    p.add_argument("--out", type=Path, help="JSON-lines file (default: standard output)")
    p.set_defaults(func=cmd_localize)

    p = sub.add_parser(
        "eval",
        help=(
            "Recall@1/5/10/20 and confidence of queries against a map, per pipeline configuration"
        ),
        description=(
            "Run query images through the node's pipeline once per configuration (every --rerank"
            " with every --temporal): prints one row each (Recall@N, precision and fraction of"
            " pose priors at --min-confidence, AUC-PR, Extended Precision) and writes"
            " results.json, recall.png and precision_recall.png."
        ),
    )
    _add_query_args(p)
    _add_pipeline_args(p, several=True)
    p.add_argument(
        "--threshold-m",
        type=float,
        default=25.0,
        help="a match is right within this many metres (default: %(default)s)",
    )
    p.add_argument(
        "--frame-tolerance",
        type=int,
        help="instead of metres: right within this many frames (aligned sequences)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("eval_out"),
        help="report directory (default: %(default)s)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "inspect-map",
        help="what a map holds and whether it verifies",
        description=(
            "Print a map's manifest and load it the way the node does (manifest checksum and"
            " schema, every file's sha256, shapes and counts). Exit status 1 when it does not"
            " verify."
        ),
    )
    p.add_argument("map", type=Path, help="map directory")
    p.set_defaults(func=cmd_inspect_map)

    p = sub.add_parser(
        "build-index",
        help="rebuild a map's index (and PCA) from its stored descriptors",
        description=(
            "Rebuild a map's search index, and its PCA, with other parameters from the map's"
            " stored descriptors, without re-extracting. The map is verified first and replaced"
            " atomically: an interrupted rebuild leaves the old map as it was."
        ),
    )
    p.add_argument("map", type=Path, help="map directory")
    _add_index_args(p)
    p.set_defaults(func=cmd_build_index)

    p = sub.add_parser(
        "export",
        help="export a model to ONNX or a TensorRT engine",
        description=(
            "Export a model to ONNX (checked against torch) or build a TensorRT engine from it."
        ),
    )
    p.add_argument("--model", required=True, help="model name, e.g. scicevpr-b")
    p.add_argument("--weights", help="official checkpoint file")
    p.add_argument(
        "--format", default="onnx", choices=["onnx", "tensorrt"], help="default: %(default)s"
    )
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="default: %(default)s")
    p.add_argument("--out", required=True, type=Path, help="output file")
    p.add_argument(
        "--calib-images", type=Path, help="folder of images for int8 calibration (TensorRT)"
    )
    p.add_argument(
        "--check-images",
        type=Path,
        help="folder of images: compare the ONNX export with torch on them",
    )
    p.add_argument(
        "--engine-cache-dir",
        type=Path,
        help="where the intermediate ONNX file for TensorRT is cached",
    )
    p.set_defaults(func=cmd_export)

    from vpr_ros.training.run import add_arguments as add_train_arguments

    p = sub.add_parser(
        "train",
        help="train a model on GSV-Cities, VPR-layout folders, aligned traversals or your rosbags",
        description=(
            "Train the trainable default (CPU, minutes), SciceVPR (teacher, then student),"
            " MutualVPR or FoL. Validates Recall@1 on held-apart places each epoch; writes"
            " checkpoints in the authors' format (resumable with --resume) and training.png."
        ),
    )
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    configure_logging(a.verbose)
    try:
        return a.func(a)
    except VprError as e:
        print(f"vpr-ros {a.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vpr-ros {a.command}: interrupted; nothing was left half-written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
