"""`vpr-ros inspect-map`: what a map holds, and whether it loads the way the node loads it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("inspect-map", help="what a map holds and whether it verifies",
                            description="Print a map's manifest and load it the way the node "
                            "does (manifest checksum and schema, every file's sha256, shapes and "
                            "counts). Exit status 1 when it does not verify.")
    parser.add_argument("map", type=Path, help="map directory")
    return parser


def run(args: argparse.Namespace) -> int:
    from vpr_ros.errors import MapError
    from vpr_ros.maps.mapdir import load_map, read_manifest

    print(f"map        {args.map}")
    try:
        manifest = read_manifest(args.map)
        model, index = manifest.model, manifest.index
        print(
            f"id         {manifest.map_id}\ncreated    {manifest.created}\nplaces    "
            f" {manifest.place_count}\nmodel      {model.name} (fingerprint"
            f" {model.fingerprint}, {model.dim}-D, input {list(model.input_size)})\nindex     "
            f" {index.type} {json.dumps(index.params)}, {index.dim}-D"
        )
        if pca := index.pca:
            print(
                f"pca        {pca.input_dim} ->"
                f" {pca.output_dim}{' whitened' if pca.whiten else ''},"
                f" {pca.explained_variance:.1%} of the variance kept"
            )
        for s in manifest.sources:
            print(f"source     {json.dumps(s)}")
        # "verifies" means exactly: the loader the node and localize use accepts it
        load_map(args.map)
    except MapError as e:
        print(f"verifies   NO: {e}")
        return 1
    print("verifies   yes")
    return 0
