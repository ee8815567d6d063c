"""
Start-up per backend: a fresh process to its first descriptor, with a cold and a warm cache.

    .venv/bin/python bench/bench_startup.py --models scicevpr-b --configs torch-compile:bf16

Each configuration runs twice in new Python processes sharing one cache directory: the
first start finds the cache empty (ONNX export, int8 quantisation, OpenVINO or AOTInductor
compile), the second reuses what the first wrote.  Timed: interpreter start, imports, model
build (seeded random weights, as bench_backends), extractor creation and one descriptor --
what a node does before it can answer its first frame, minus the map load and DDS.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import measure_starts, print_machine

DEFAULT_CONFIGS = (
    "torch:fp32",
    "torch-compile:bf16",
    "onnxruntime:fp32",
    "onnxruntime:int8",
    "openvino:fp32",
    "openvino:bf16",
    "openvino:int8",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["baseline"])
    parser.add_argument(
        "--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="backend:precision pairs"
    )
    parser.add_argument(
        "--cache-dir", type=Path, help="cache shared by the starts (default: a new temporary one)"
    )
    args = parser.parse_args()
    print_machine()
    print("| model | backend | first start s (cold cache) | second start s (warm cache) |")
    print("|---|---|---|---|", flush=True)
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            starts = measure_starts(model, args.configs, args.cache_dir or Path(tmp) / model)
            for config, start in starts.items():
                name = config.replace(":", "-")
                for which in ("first", "second"):
                    value = start[which].get("wall_s", float("nan"))
                    summary.append(f"{model}.{name}.{which}_s={value:.1f}")
    print(" ".join(summary))


if __name__ == "__main__":
    main()
