"""`vpr-ros build-map`: a map from rosbags or an image folder, or grown with --append."""

from __future__ import annotations

import argparse
from pathlib import Path

from vpr_ros.cli import options
from vpr_ros.errors import VprError
from vpr_ros.parameters import BY_NAME


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("build-map", help="build a map from rosbags or an image folder",
                            description="Build a map directory (faiss index, places, "
                            "descriptors, manifest) from rosbag2 files or an image folder. "
                            "Written atomically.")
    options.add_source_args(parser, keyframes=True)
    options.add_model_args(
        parser, "descriptor model (default: baseline; with --append the map's model)"
    )
    parser.add_argument("--out", required=True, type=Path,
                        help="map directory to write (replaced only when the build succeeds)")
    parser.add_argument("--append", action="store_true",
                        help="add the bags (or folder) to the map at --out: only the new frames "
                        "are extracted, with the map's model, PCA, index settings and re-ranker; "
                        "the map is replaced only when the grown one is complete")
    group = parser.add_argument_group("distributed (Ray)")
    group.add_argument("--workers", type=int,
                       help="extract on this many Ray workers, one bag per task, each loading "
                       "the model once (default: in this process)")
    group.add_argument("--ray-address",
                       help="join this Ray cluster (HEAD_IP:6379, after `ray start --head "
                       "--node-ip-address HEAD_IP` there and `ray start --address HEAD_IP:6379` "
                       "on each worker node; bags and weights at the same paths on every node); "
                       "default: a private Ray on 127.0.0.1 for this build")
    options.add_index_args(parser)
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per inference batch (default: %(default)s)")
    parser.add_argument("--allow-no-poses", action="store_true",
                        help="write a map even when no place has a position (it can match places "
                        "but never localize)")
    parser.add_argument("--rerank", default="auto", choices=BY_NAME["rerank"].choices,
                        help="also store this re-ranker's local features of every place (e.g. "
                        "fol with a FoL model on backend torch), so the node and eval can "
                        "re-rank with it; auto: with --append the map's, else none (default: "
                        "%(default)s)")
    return parser


def run(args: argparse.Namespace) -> int:
    from vpr_ros.maps.local_features import resolve_rerank
    from vpr_ros.maps.mapdir import read_manifest

    if args.append and (args.index != "auto" or args.pca_dim != "auto" or args.whiten):
        raise VprError(
            "--append keeps the map's index and PCA (its places stay in their search space):"
            f" leave out --index/--pca-dim/--whiten, then run `vpr-ros build-index {args.out}"
            " ...` to change them"
        )
    if args.ray_address and args.workers is None:
        raise VprError("--ray-address needs --workers N (how many Ray workers to run)")
    held = read_manifest(args.out) if args.append else None
    model = args.model or (held.model.name if held else "baseline")
    rerank = resolve_rerank(args.rerank, args.out if held else None)
    build = _build_in_process if args.workers is None else _build_on_ray
    path, stats = build(args, model, rerank)
    count = read_manifest(path).place_count
    print(f"{'appended to' if args.append else 'map written to'} {path}: {count} places")
    skipped = "\n".join(f"  {line}" for line in stats.report().splitlines())
    print(f"skipped while reading:\n{skipped}")
    return 0


def _write_built(args: argparse.Namespace, shards, model: dict, sources: list, local):
    """Write a fresh map, or grow the one at --out with --append."""
    from vpr_ros.maps.append import append_to_map
    from vpr_ros.maps.build import describe_source, write_shards

    if args.append:
        described = [d for s in sources for d in describe_source(s)]
        return append_to_map(args.out, shards, model, described, args.allow_no_poses, local)
    return write_shards(
        args.out, shards, model, options.index_config(args), args.allow_no_poses, local
    )


def _build_in_process(args: argparse.Namespace, model: str, rerank: str | None):
    from vpr_ros.rerank import create_reranker
    from vpr_ros.maps.build import in_process

    source = options.open_source(args, keyframes=True)
    extractor = options.extractor(args, model)
    reranker = create_reranker(rerank, extractor) if rerank else None
    return _write_built(
        args,
        in_process(source, extractor, args.batch_size, reranker),
        extractor.describe(),
        [source],
        reranker.describe() if reranker else None,
    )


def _build_on_ray(args: argparse.Namespace, model: str, rerank: str | None):
    from vpr_ros.maps.distributed import ExtractorSpec, RayExtraction

    # one task per bag; a folder is one task
    sources = (
        [options.open_source(args, True, [bag]) for bag in args.bag]
        if args.bag else [options.open_source(args, True)]
    )
    spec = ExtractorSpec(
        model,
        args.weights,
        args.backend,
        args.precision,
        str(args.engine_cache_dir) if args.engine_cache_dir else None,
    )
    with RayExtraction(
        spec, args.workers, args.batch_size, rerank, args.ray_address, args.verbose
    ) as ray:
        return _write_built(args, ray.shards(sources), ray.model, sources, ray.local_description)
