"""
Start and stop the localize node and the bag player as separate processes, DDS on loopback.

The demo, the tests and the benchmarks share these, so each runs the node the way a user does:
its console entry point with ``--ros-args --params-file config/localize.yaml``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from vpr_harness.replay.dds_env import loopback_dds_env

CONFIG = Path(__file__).resolve().parents[3] / "config" / "localize.yaml"


def _params_file() -> Path:
    if CONFIG.is_file():
        return CONFIG
    from ament_index_python.packages import get_package_share_directory  # installed with colcon

    return Path(get_package_share_directory("vpr_ros")) / "config" / "localize.yaml"


def _ros_env() -> dict:
    return {**loopback_dds_env(), "PYTHONUNBUFFERED": "1"}


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name) or name


def start_node(
    map_path: Path,
    model: str,
    image_topic: str,
    log_path: Path,
    weights: str | None = None,
    extra: list[str] | None = None,
) -> subprocess.Popen:
    """
    Start the localize node as its own process, configured like a user would.

    ``image_topic`` is the camera topic; one ending in /compressed selects the compressed
    transport.
    """
    base, compressed = (
        (image_topic[: -len("/compressed")], True)
        if image_topic.endswith("/compressed")
        else (image_topic, False)
    )
    cmd = [_bin("localize"), "--ros-args", "--params-file", str(_params_file()),
           "-p", f"map_path:={map_path}", "-p", f"model:={model}",
           "-p", f"image_transport:={'compressed' if compressed else 'raw'}",
           "-r", f"image:={base}", "-r", f"image/compressed:={base}/compressed"]
    if weights:
        cmd += ["-p", f"weights:={weights}"]
    cmd += extra or []
    return subprocess.Popen(
        cmd,
        stdout=open(log_path, "w"),
        stderr=subprocess.STDOUT,
        env=_ros_env(),
        start_new_session=True,
    )


def wait_for_subscriber(
    pub, node: subprocess.Popen, log_path: Path, timeout: float = 60.0
) -> None:
    """
    Block until the node process subscribes to ``pub``'s topic.

    RuntimeError with its log's tail when it exits or does not subscribe within ``timeout``
    seconds.
    """
    deadline = time.monotonic() + timeout
    while pub.get_subscription_count() == 0:
        if node.poll() is not None or time.monotonic() > deadline:
            why = (
                "exited"
                if node.poll() is not None
                else f"did not subscribe to {pub.topic_name} within {timeout:g} s"
            )
            raise RuntimeError(f"the node {why}: {Path(log_path).read_text()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.5)  # let discovery settle on both sides before the first frame


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def replay(
    bag: Path, topic: str, sent_log: Path, rate: float = 0.0, limit: int = 0
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "vpr_harness.replay.player",
        "--bag",
        str(bag),
        "--topic",
        topic,
        "--sent-log",
        str(sent_log),
    ]
    cmd += ["--rate", str(rate)] if rate else []
    cmd += ["--limit", str(limit)] if limit else []
    return subprocess.run(cmd, env=_ros_env(), capture_output=True, text=True, timeout=3600)
