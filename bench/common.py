"""Helpers the benchmarks share: topics, demo bags, seeded models, start-up timing, the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE_TOPIC = "/camera/image_raw"
# ../shared/data beside the repository
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
POSE_TOPIC = "/gps/fix"


def demo_bags(frames: int, workdir: Path | None = None) -> tuple[Path, Path, Path]:
    """(workdir, map bag, query bag) of the synthetic route."""
    from vpr_harness.demo.route import write_demo_bags

    workdir = workdir or Path(tempfile.mkdtemp(prefix="vpr_bench_"))
    map_bag, query_bag = write_demo_bags(workdir / "bags", frames=frames)
    return workdir, Path(map_bag), Path(query_bag)


def percentiles(values, ps=(50, 95)) -> dict:
    import numpy as np

    return {f"p{p}": float(np.percentile(values, p)) for p in ps}


def print_machine() -> str:
    """Print (and return) the one-line machine description every speed benchmark starts with."""
    from vpr_ros.host import describe

    line = f"machine: {describe()}"
    print(line, flush=True)
    return line


def seeded_model(name: str):
    """(model, spec, fingerprint) of ``name``, with seeded random weights where it needs them."""
    import torch

    from vpr_ros.models import registry
    from vpr_ros.models.load import load_model, state_dict_fingerprint

    spec = registry.spec(name)
    if not spec.needs_weights:
        return load_model(name)
    torch.manual_seed(0)
    model = registry.build(name)
    return model, spec, state_dict_fingerprint(name, model.state_dict())


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - start) * 1e3


def start_once(model: str, backend: str, precision: str, cache_dir: Path) -> dict:
    """Run one start in a fresh process; return its wall time and what it said."""
    code = (
        "import sys, json, time; t = time.perf_counter();"
        "from common import seeded_model;"
        "from vpr_ros.inference.factory import build_extractor;"
        "import numpy as np; from pathlib import Path;"
        f"net, spec, fp = seeded_model({model!r});"
        f"e = build_extractor({backend!r}, {precision!r}, net, spec, fp,"
        f" Path({str(cache_dir)!r}));"
        "e.extract([np.zeros((480, 640, 3), np.uint8)]);"
        "print(json.dumps({'in_process_s': time.perf_counter() - t}))"
    )
    start = time.perf_counter()
    # ``python -c`` imports from its working directory: this one.
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent
    )
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
