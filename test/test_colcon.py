"""
The package as a ROS 2 user gets it: the repository in a workspace's src/, built with colcon.

From a clean copy (the tracked files only, nothing built in place): the messages, the Python
package and what `ros2 launch` needs are installed, and the installed node publishes
vpr_ros/msg/PlaceMatch to a subscriber in another process that imports the installed messages.
The ROS wheels of this environment are the underlay (AMENT_PREFIX_PATH), as /opt/ros/<distro> is
on a robot; `make setup` has pointed their exported include directories at this Python.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rosutil import build_test_map, place_images

REPO = Path(__file__).resolve().parents[1]
COLCON = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which("colcon")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        COLCON is None,
        reason="colcon is not installed (pip install colcon-core colcon-ros colcon-cmake)",
    ),
]

SUBSCRIBER = """
import json, sys
import rclpy
import vpr_ros.msg
from vpr_ros.msg import PlaceMatch
from vpr_ros.ros.messages import message_fields
rclpy.init()
node = rclpy.create_node("workspace_subscriber")
got = []
node.create_subscription(PlaceMatch, "/vpr/match", got.append, 10)
while not got:
    rclpy.spin_once(node, timeout_sec=0.5)
print(json.dumps({"module": vpr_ros.msg.__file__, "match": message_fields(got[0])}))
"""


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    """Build a workspace whose src/vpr_ros is a copy of the repository's tracked files."""
    ws = tmp_path_factory.mktemp("ws")
    src = ws / "src" / "vpr_ros"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():  # a tracked file deleted in this working tree stays out
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    build = subprocess.run(
        [COLCON, "--log-base", str(ws / "log"), "build", "--base-paths", str(ws / "src"),
         "--build-base", str(ws / "build"), "--install-base", str(ws / "install"),
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=ws, env={**os.environ, "AMENT_PREFIX_PATH": sys.prefix},
        capture_output=True, text=True, timeout=900,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return ws / "install" / "vpr_ros"


def _installed_env(prefix: Path) -> dict:
    """Return what sourcing the workspace's install/setup.bash sets for this package."""
    site = next((prefix / "lib").glob("python3*/site-packages"))
    return {
        **os.environ,
        "PYTHONPATH": str(site),
        "LD_LIBRARY_PATH": os.pathsep.join(
            p for p in (str(prefix / "lib"), os.environ.get("LD_LIBRARY_PATH", "")) if p),
        "AMENT_PREFIX_PATH": os.pathsep.join((str(prefix), sys.prefix)),
        "PYTHONUNBUFFERED": "1",
    }


def test_colcon_build_installs_messages_launch_config_and_a_working_executable(prefix):
    share = prefix / "share/vpr_ros"
    assert (share / "launch/localize.launch.py").is_file()
    for name in ("localize.yaml", "vpr.rviz", "vpr.foxglove.json", "fastdds_robot.xml"):
        assert (share / "config" / name).read_text() == (REPO / "config" / name).read_text()
    assert (prefix / "share/ament_index/resource_index/packages/vpr_ros").is_file()
    assert (share / "package.xml").is_file()
    for name in ("PlaceMatch", "PlaceCandidate", "TemporalState", "StageLatency"):
        assert all((share / "msg" / f"{name}.{ext}").is_file() for ext in ("msg", "idl", "json"))
    # C and C++ headers for nodes of other packages in the workspace
    assert (prefix / "include/vpr_ros/vpr_ros/msg/place_match.hpp").is_file()
    assert (prefix / "include/vpr_ros/vpr_ros/msg/place_match.h").is_file()
    executable = prefix / "lib/vpr_ros/localize"
    assert os.access(executable, os.X_OK)
    site = next((prefix / "lib").glob("python3*/site-packages"))
    # the test, demo and benchmark harness (tools/) stays out of what a robot installs
    assert not (site / "vpr_ros" / "replay").exists() and not list(site.glob("vpr_harness*"))
    ran = subprocess.run([str(executable), "--help"], cwd=prefix, env=_installed_env(prefix),
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "usage: localize" in ran.stdout and "map_path (string" in ran.stdout


def test_installed_node_publishes_place_match_to_a_subscriber_of_the_workspace(prefix, tmp_path):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    images = place_images(4, seed=11)
    map_dir = build_test_map(tmp_path / "map", images)
    env = _installed_env(prefix)
    log = tmp_path / "node.log"
    node = subprocess.Popen(
        [str(prefix / "lib/vpr_ros/localize"), "--ros-args", "--params-file",
         str(prefix / "share/vpr_ros/config/localize.yaml"), "-p", f"map_path:={map_dir}",
         "-r", "image:=/colcon_test/camera"],
        cwd=tmp_path, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    subscriber = subprocess.Popen([sys.executable, "-c", SUBSCRIBER], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not rclpy.ok():
        rclpy.init()
    camera_node = rclpy.create_node("colcon_test_camera")
    try:
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        camera = camera_node.create_publisher(Image, "/colcon_test/camera", reliable)
        h, w, _ = images[2].shape
        frame = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=images[2].tobytes())
        frame.header.stamp.sec, frame.header.frame_id = 777, "cam_ws"
        # a frame every half second until the subscriber has its match (it exits then)
        deadline = time.monotonic() + 180
        while subscriber.poll() is None and time.monotonic() < deadline:
            if node.poll() is not None:
                break
            if camera.get_subscription_count():
                camera.publish(frame)
            time.sleep(0.5)
        assert subscriber.poll() == 0, log.read_text()[-3000:] + subscriber.stderr.read()[-3000:]
        got = json.loads(subscriber.stdout.read())
        assert got["module"].startswith(str(prefix))  # the workspace's messages, not the source's
        match = got["match"]
        assert match["header"] == {"stamp": {"sec": 777, "nanosec": 0}, "frame_id": "cam_ws"}
        best = match["candidates"][0]
        assert best["place_id"] == 2 and best["pose"]["position"]["x"] == 1020.0
        assert np.isfinite(match["confidence"]) and match["latency_ms"]["total"] > 0
    finally:
        camera_node.destroy_node()
        if subscriber.poll() is None:
            subscriber.kill()
        subscriber.wait()
        node.send_signal(signal.SIGINT)
        assert node.wait(30) == 0, log.read_text()[-3000:]
