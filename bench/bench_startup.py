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
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_machine  # noqa: E402

DEFAULT_CONFIGS = (
    "torch:fp32",
    "torch-compile:bf16",
    "onnxruntime:fp32",
    "onnxruntime:int8",
    "openvino:fp32",
    "openvino:bf16",
    "openvino:int8",
)


def start_once(model: str, backend: str, precision: str, cache_dir: Path) -> dict:
    """Run one start in a fresh process; return its wall time and what it said."""
    code = (
        "import sys, json, time; t = time.perf_counter();"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r});"
        "from bench_backends import seeded_model;"
        "from vpr_ros.inference.factory import build_extractor;"
        "import numpy as np; from pathlib import Path;"
        f"net, spec, fp = seeded_model({model!r});"
        f"e = build_extractor({backend!r}, {precision!r}, net, spec, fp,"
        f" Path({str(cache_dir)!r}));"
        "e.extract([np.zeros((480, 640, 3), np.uint8)]);"
        "print(json.dumps({'in_process_s': time.perf_counter() - t}))"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"}
    return {"wall_s": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def measure_starts(model: str, configs: list[str], cache_dir: Path) -> dict[str, dict]:
    """First (cold cache) and second (warm cache) start of each ``backend:precision``."""
    starts = {}
    for config in configs:
        backend, precision = config.split(":")
        first = start_once(model, backend, precision, cache_dir)
        second = start_once(model, backend, precision, cache_dir)
        starts[config] = {"first": first, "second": second}
        print(
            f"| {model} | {backend} {precision} | {_seconds(first)} | {_seconds(second)} |",
            flush=True,
        )
    return starts


def _seconds(start: dict) -> str:
    return f"{start['wall_s']:.1f}" if "wall_s" in start else f"failed: {start['error']}"


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
