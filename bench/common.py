"""Shared benchmark setup: loopback-only DDS, the demo route's bags, a map built from the first."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vpr_ros.replay.dds_env import apply_loopback_dds_env  # noqa: E402

apply_loopback_dds_env()

IMAGE_TOPIC = "/camera/image_raw"
# ../shared/data beside the repository
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
POSE_TOPIC = "/gps/fix"


def demo_bags(frames: int, workdir: Path | None = None) -> tuple[Path, Path, Path]:
    """(workdir, map bag, query bag) of the synthetic route."""
    from vpr_ros.demo.route import write_demo_bags

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
