"""
The node's ROS interface over real DDS.

The typed PlaceMatch, the visualization topics, the lifecycle transitions and namespaces. The
node runs as its own process (its console entry point, the way a user starts it); this test
process subscribes, publishes frames and calls the lifecycle services like any other ROS node.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")

from geometry_msgs.msg import PoseArray  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from conftest import REPO  # noqa: E402
from rosutil import build_test_map, perturb, place_images  # noqa: E402
from vpr_ros.msg import PlaceMatch  # noqa: E402
from vpr_ros.place_match import LATENCY_STAGES, TEMPORAL_FIELDS  # noqa: E402
from vpr_ros.ros.messages import message_fields  # noqa: E402

N_PLACES = 8
CAMERA = "/iface_test/camera"
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def images():
    return place_images(N_PLACES, seed=3)


@pytest.fixture(scope="module")
def map_dir(tmp_path_factory, images):
    return build_test_map(tmp_path_factory.mktemp("map") / "map", images)


@pytest.fixture(scope="module")
def ros():
    """Spin a node of this process on its own thread."""
    if not rclpy.ok():
        rclpy.init()
    node = rclpy.create_node("vpr_interface_test")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown()
    thread.join(timeout=5.0)
    node.destroy_node()


class Inbox:
    """Every message of one topic, as it arrives."""

    def __init__(self, node, cls, topic, qos=RELIABLE):
        self.items: list = []
        self.sub = node.create_subscription(cls, topic, self.items.append, qos)

    def wait(self, predicate, timeout: float = 30.0):
        """Return the first message that satisfies ``predicate``, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in list(self.items):
                if predicate(item):
                    return item
            time.sleep(0.05)
        return None


def _start(map_path: Path, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).parent / "localize"), "--ros-args",
           "--params-file", str(REPO / "config/localize.yaml"),
           "-p", f"map_path:={map_path}", "-r", f"image:={CAMERA}", *extra]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _until(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def _frame(rgb, sec: int) -> Image:
    h, w, _ = rgb.shape
    msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=rgb.tobytes())
    msg.header.stamp.sec, msg.header.frame_id = sec, "cam_iface"
    return msg


def _call(node, srv, name: str, request):
    client = node.create_client(srv, name)
    try:
        assert client.wait_for_service(timeout_sec=60), f"no service {name}"
        return client.call(request, timeout_sec=120)
    finally:
        node.destroy_client(client)


def _fields(msg_type) -> list[str]:
    return list(msg_type.get_fields_and_field_types())


def test_place_match_is_typed_and_the_map_and_candidates_are_shown(tmp_path, map_dir, images,
                                                                   ros):
    log = tmp_path / "node.log"
    proc = _start(map_dir, log, "-p", "viz_max_places:=5")
    try:
        matches = Inbox(ros, PlaceMatch, "/vpr/match")
        candidates = Inbox(ros, PoseArray, "/vpr/candidates")
        markers = Inbox(ros, MarkerArray, "/vpr/markers")
        camera = ros.create_publisher(Image, CAMERA, RELIABLE)
        assert _until(lambda: camera.get_subscription_count() > 0), log.read_text()
        # joining after the node published the map: transient local delivers it all the same
        places = Inbox(ros, MarkerArray, "/vpr/map_places", LATCHED)
        shown = places.wait(lambda m: any(k.action == Marker.ADD for k in m.markers))
        assert shown is not None, log.read_text()
        (points,) = [k for k in shown.markers if k.action == Marker.ADD]
        assert points.header.frame_id == "map" and points.type == Marker.POINTS
        # 8 places thinned to at most 5: every second one, along the route
        assert [p.x for p in points.points] == [1000.0 + 10 * i for i in range(0, N_PLACES, 2)]
        assert _until(lambda: candidates.sub.get_publisher_count() > 0
                      and markers.sub.get_publisher_count() > 0)
        time.sleep(0.5)  # discovery settles on the node's side too

        place = 5
        camera.publish(_frame(perturb(images[place], 1), 4242))
        match = matches.wait(lambda m: m.header.stamp.sec == 4242)
        assert match is not None, log.read_text()
        assert type(match) is PlaceMatch and match.header.frame_id == "cam_iface"
        best = match.candidates[0]
        assert best.place_id == place and best.has_position and best.has_orientation
        assert best.pose.position.x == 1000.0 + 10 * place and best.pose.position.y == 2000.0
        assert best.pose.orientation.w == 1.0 and best.source == "test"  # heading east
        assert 0.0 <= match.confidence <= 1.0 and match.model == "baseline"
        assert match.temporal.filter == "hmm" and not math.isnan(match.temporal.agreement)
        assert match.latency_ms.total > 0 and match.latency_ms.decode >= 0
        assert len(match.covariance_xy) == 4 and match.covariance_xy[0] >= 25.0 - 1e-6
        # the JSON of `vpr-ros localize` has the same fields, nested the same way
        fields = message_fields(match)
        assert list(fields) == _fields(PlaceMatch) and list(fields["candidates"][0]) == [
            "place_id", "score", "rerank_score", "temporal_score", "has_position",
            "has_orientation", "pose", "map_stamp", "source"]
        assert list(fields["temporal"]) == list(TEMPORAL_FIELDS)
        assert list(fields["latency_ms"]) == list(LATENCY_STAGES)

        poses = candidates.wait(lambda m: m.header.stamp.sec == 4242)
        assert poses is not None and poses.header.frame_id == "map"
        assert [p.position.x for p in poses.poses] == [
            c.pose.position.x for c in match.candidates]
        shown = markers.wait(lambda m: m.markers and m.markers[0].header.stamp.sec == 4242)
        by_ns = {m.ns: m for m in shown.markers}
        assert by_ns["best"].action == Marker.ADD
        assert by_ns["best"].pose.position.x == best.pose.position.x
        if match.pose_prior:  # the 95 % ellipse of the prior's covariance, at least 2 x 2.45 sigma
            assert by_ns["prior"].action == Marker.ADD
            assert by_ns["prior"].scale.x >= 2 * math.sqrt(5.991 * 25.0) - 1e-3
        else:
            assert by_ns["prior"].action == Marker.DELETE
    finally:
        assert _stop(proc) == 0, log.read_text()


def test_lifecycle_transitions_in_a_namespace(tmp_path, map_dir, images, ros):
    ns = "/robot_b"
    log = tmp_path / "node.log"
    proc = _start(map_dir, log, "-p", "autostart:=false", "-r", f"__ns:={ns}")
    node = f"{ns}/vpr_localizer"

    def state() -> int:
        return _call(ros, GetState, f"{node}/get_state", GetState.Request()).current_state.id

    def change(transition: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition))
        return _call(ros, ChangeState, f"{node}/change_state", request).success

    try:
        matches = Inbox(ros, PlaceMatch, f"{ns}/vpr/match")
        camera = ros.create_publisher(Image, CAMERA, RELIABLE)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED, log.read_text()
        # unconfigured: nothing loaded, nothing advertised, no subscription
        assert ros.count_publishers(f"{ns}/vpr/match") == 0
        assert camera.get_subscription_count() == 0

        assert change(Transition.TRANSITION_CONFIGURE), log.read_text()
        assert state() == State.PRIMARY_STATE_INACTIVE
        assert _until(lambda: ros.count_publishers(f"{ns}/vpr/match") == 1)
        assert ros.count_publishers("/vpr/match") == 0  # the topic follows the namespace
        assert camera.get_subscription_count() == 0

        assert change(Transition.TRANSITION_ACTIVATE)
        assert _until(lambda: camera.get_subscription_count() == 1), log.read_text()
        time.sleep(0.5)
        camera.publish(_frame(perturb(images[2], 2), 5001))
        match = matches.wait(lambda m: m.header.stamp.sec == 5001)
        assert match is not None and match.candidates[0].place_id == 2, log.read_text()
        reloaded = _call(ros, Trigger, f"{node}/reload_map", Trigger.Request())
        assert reloaded.success, reloaded.message

        # inactive: the subscription goes, the map and the model stay (activating again answers
        # at once, no reload)
        assert change(Transition.TRANSITION_DEACTIVATE)
        assert _until(lambda: camera.get_subscription_count() == 0)
        assert ros.count_publishers(f"{ns}/vpr/match") == 1
        assert change(Transition.TRANSITION_ACTIVATE)
        assert _until(lambda: camera.get_subscription_count() == 1)
        time.sleep(0.5)
        camera.publish(_frame(perturb(images[6], 3), 5002))
        match = matches.wait(lambda m: m.header.stamp.sec == 5002)
        assert match is not None and match.candidates[0].place_id == 6, log.read_text()

        assert change(Transition.TRANSITION_DEACTIVATE)
        assert change(Transition.TRANSITION_CLEANUP)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert _until(lambda: ros.count_publishers(f"{ns}/vpr/match") == 0)
        assert camera.get_subscription_count() == 0
        assert _until(lambda: f"{node}/reload_map" not in dict(ros.get_service_names_and_types()))

        assert change(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert state() == State.PRIMARY_STATE_FINALIZED
        assert proc.poll() is None  # finalized, still answering until it is stopped
    finally:
        assert _stop(proc) == 0, log.read_text()
