"""`vpr-ros build-index`: rebuild a map's index (and PCA) from its stored descriptors."""

from __future__ import annotations

import argparse
from pathlib import Path

from vpr_ros.cli import options


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("build-index",
                            help="rebuild a map's index (and PCA) from its stored descriptors",
                            description="Rebuild a map's search index, and its PCA, with other "
                            "parameters from the map's stored descriptors, without "
                            "re-extracting. The map is verified first and replaced atomically: "
                            "an interrupted rebuild leaves the old map as it was.")
    parser.add_argument("map", type=Path, help="map directory")
    options.add_index_args(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from vpr_ros.maps.mapdir import read_manifest, rebuild_index

    manifest = read_manifest(rebuild_index(args.map, options.index_config(args)))
    pca = manifest.index.pca
    pca_text = (
        f", PCA {pca.input_dim}->{pca.output_dim}{' whitened' if pca.whiten else ''}"
        if pca
        else ""
    )
    print(f"rebuilt {args.map}: {manifest.index.type} index over {manifest.place_count} places"
          f"{pca_text}")
    return 0
