"""`vpr-ros export`: a model to ONNX (checked against torch) or a TensorRT engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from vpr_ros.errors import VprError
from vpr_ros.parameters import BY_NAME


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("export", help="export a model to ONNX or a TensorRT engine",
                            description="Export a model to ONNX (checked against torch) or build "
                            "a TensorRT engine from it.")
    parser.add_argument("--model", required=True, help="model name, e.g. scicevpr-b")
    parser.add_argument("--weights", help="official checkpoint file")
    parser.add_argument("--format", default="onnx", choices=["onnx", "tensorrt"],
                        help="default: %(default)s")
    parser.add_argument("--precision", default=BY_NAME["precision"].default,
                        choices=BY_NAME["precision"].choices, help="default: %(default)s")
    parser.add_argument("--out", required=True, type=Path, help="output file")
    parser.add_argument("--calib-images", type=Path,
                        help="folder of images for int8 calibration (TensorRT)")
    parser.add_argument("--check-images", type=Path,
                        help="folder of images: compare the ONNX export with torch on them")
    parser.add_argument("--engine-cache-dir", type=Path,
                        help="where the intermediate ONNX file for TensorRT is cached")
    return parser


def run(args: argparse.Namespace) -> int:
    from vpr_ros.models.load import load_model

    net, spec, fingerprint = load_model(args.model, args.weights)
    if args.format == "onnx":
        from vpr_ros.inference.onnx_export import write_onnx

        out = write_onnx(net, spec, args.precision, args.out)
        # fp16 graphs need a GPU provider to run
        if args.check_images and args.precision != "fp16":
            from vpr_ros.imaging import image_files, read_rgb
            from vpr_ros.inference.parity import parity_check

            paths = image_files(args.check_images)
            if not paths:
                raise VprError(
                    f"no images in {args.check_images} for the parity check; give a folder of"
                    " camera images"
                )
            print(
                f"parity torch fp32 vs {out.name}:"
                f" {parity_check(net, spec, out, [read_rgb(p) for p in paths])}"
            )
    else:
        from vpr_ros.inference.onnx_export import cached_onnx
        from vpr_ros.inference.tensorrt_backend import build_engine_file

        onnx_path = cached_onnx(net, spec, fingerprint, "fp32", args.engine_cache_dir)
        out = build_engine_file(
            onnx_path, spec, args.precision, args.out, calib_dir=args.calib_images
        )
    print(f"wrote {out} ({spec.name}, {args.precision}, fingerprint {fingerprint})")
    return 0
