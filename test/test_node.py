"""The localize node in its own process, fed and observed over DDS by this test process."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import cv2
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from rosutil import build_test_map, perturb, place_images  # noqa: E402
from vpr_harness.replay.processes import start_node, stop_process  # noqa: E402
from vpr_harness.replay.scenes import raw_image_msg  # noqa: E402
from vpr_ros.imaging import rgb_to_compressed  # noqa: E402
from vpr_harness.replay.collector import OutputCollector  # noqa: E402

N_PLACES = 12
MODEL = "baseline"


@pytest.fixture(scope="module")
def images():
    return place_images(N_PLACES)


@pytest.fixture(scope="module")
def map_dir(tmp_path_factory, images):
    return build_test_map(tmp_path_factory.mktemp("map") / "map", images, MODEL)


@pytest.fixture(scope="module")
def collector():
    c = OutputCollector()
    yield c
    c.close()


class NodeUnderTest:
    def __init__(self, tmp, map_path, extra=()):
        self.log = tmp / "node.log"
        self.proc = start_node(map_path, MODEL, "/test/camera", self.log, extra=list(extra))

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        return stop_process(self.proc)


def _raw(rgb, stamp_s: int, frame_id="cam_test", encoding="rgb8"):
    msg = raw_image_msg(rgb, encoding, frame_id)
    msg.header.stamp.sec = stamp_s
    return msg


def _publisher(node, cls, topic):
    pub = node.create_publisher(
        cls, topic, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    )
    deadline = time.monotonic() + 60
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pub.get_subscription_count() > 0, "the node never subscribed to the image topic"
    time.sleep(0.5)
    return pub


def _matches_after(collector, t0_ns):
    return [m for t, m in collector.matches if t >= t0_ns]


def _secs(collector, t0_ns):
    return [m["header"]["stamp"]["sec"] for m in _matches_after(collector, t0_ns)]


def test_node_matches_places_with_source_stamps_and_frames(tmp_path, map_dir, images, collector):
    node = NodeUnderTest(tmp_path, map_dir)
    try:
        pub = _publisher(collector.node, Image, "/test/camera")
        t0 = collector._now()
        for i, img in enumerate(images):
            pub.publish(_raw(perturb(img, 100 + i), stamp_s=5000 + i))
            time.sleep(0.25)  # slower than the node: nothing should be dropped
        assert collector.wait_for(
            lambda: len(_matches_after(collector, t0)) >= N_PLACES, 30
        ), node.log_text()
        matches = _matches_after(collector, t0)
        by_stamp = {m["header"]["stamp"]["sec"]: m for m in matches}
        assert sorted(by_stamp) == list(range(5000, 5000 + N_PLACES))
        for sec, m in by_stamp.items():
            assert m["header"]["frame_id"] == "cam_test" and m["model"] == MODEL
            assert m["header"]["stamp"]["nanosec"] == 0
            assert len(m["candidates"]) == 5
            assert m["candidates"][0]["place_id"] == sec - 5000
            position = m["candidates"][0]["pose"]["position"]
            assert position == {"x": 1000.0 + 10 * (sec - 5000), "y": 2000.0, "z": 0.0}
            assert all(
                m["latency_ms"][k] >= 0 for k in ("decode", "descriptor", "search", "total")
            )
        priors = [p for t, p in collector.pose_priors if t >= t0]
        assert priors, "no pose prior published at all"
        for p in priors:
            assert p.header.frame_id == "map" and p.header.stamp.sec in by_stamp
            m = by_stamp[p.header.stamp.sec]
            assert p.pose.pose.position.x == m["candidates"][0]["pose"]["position"]["x"]
            assert p.pose.covariance[0] >= 25.0 - 1e-6  # at least base_sigma_m^2
    finally:
        assert node.stop() == 0, node.log_text()


def test_bad_frames_are_counted_and_the_node_keeps_running(tmp_path, map_dir, images, collector):
    node = NodeUnderTest(tmp_path, map_dir)
    try:
        pub = _publisher(collector.node, Image, "/test/camera")
        t0 = collector._now()
        bad_encoding = _raw(images[0], 6000, encoding="rgb8")
        bad_encoding.encoding = "weird42"
        zero = Image(encoding="rgb8")
        zero.header.stamp.sec = 6001
        short = _raw(images[0], 6002)
        short.data = bytes(short.data)[:1000]
        # 400 MP claimed, no data
        huge = Image(height=20000, width=20000, encoding="mono8", step=20000)
        huge.header.stamp.sec = 6003
        for m in (bad_encoding, zero, short, huge):
            pub.publish(m)
            time.sleep(0.2)
        pub.publish(_raw(images[3], 6010))
        assert collector.wait_for(
            lambda: 6010 in _secs(collector, t0), 20
        ), node.log_text()
        assert [m["header"]["stamp"]["sec"] for m in _matches_after(collector, t0)] == [6010]
        assert collector.wait_for(
            lambda: any(int(d.get("frames_bad", 0)) >= 4 for d in collector.diagnostics[-3:]), 5
        )
        assert node.proc.poll() is None
        log = node.log_text()
        assert "weird42" in log
    finally:
        assert node.stop() == 0, node.log_text()


def test_compressed_transport_and_corrupt_jpeg(tmp_path, map_dir, images, collector):
    node = NodeUnderTest(
        tmp_path, map_dir, ["-p", "image_transport:=compressed", "-p", "image_qos:=reliable"]
    )
    try:
        pub = _publisher(collector.node, CompressedImage, "/test/camera/compressed")
        t0 = collector._now()
        fmt, data = rgb_to_compressed(images[5], "jpeg")
        corrupt = CompressedImage(format=fmt, data=data[: len(data) // 2])
        corrupt.header.stamp.sec = 7000
        pub.publish(corrupt)
        time.sleep(0.3)
        good = CompressedImage(format=fmt, data=data)
        good.header.stamp.sec, good.header.frame_id = 7001, "cam_c"
        pub.publish(good)
        assert collector.wait_for(
            lambda: 7001 in _secs(collector, t0), 20
        ), node.log_text()
        got = [m for m in _matches_after(collector, t0)]
        assert [m["header"]["stamp"]["sec"] for m in got] == [7001]
        assert got[0]["candidates"][0]["place_id"] == 5 and got[0]["header"]["frame_id"] == "cam_c"
    finally:
        assert node.stop() == 0, node.log_text()


def test_latest_frame_wins_and_drops_are_counted(tmp_path, map_dir, images, collector):
    # Reliable QoS: every frame reaches the node, so what is dropped is dropped by the node, not by
    # DDS.
    node = NodeUnderTest(tmp_path, map_dir, ["-p", "image_qos:=reliable"])
    try:
        pub = _publisher(collector.node, Image, "/test/camera")
        t0 = collector._now()
        # bigger frames: slower to preprocess
        big = [cv2.resize(img, (1280, 960)) for img in images]
        burst = [_raw(big[i % N_PLACES], 8000 + i) for i in range(40)]
        # faster than the node processes, slow enough for its executor to take each one
        for msg in burst:
            pub.publish(msg)
            time.sleep(0.002)
        assert collector.wait_for(
            lambda: 8039 in _secs(collector, t0), 30
        ), node.log_text()

        def counts():
            d = collector.diagnostics[-1] if collector.diagnostics else {}
            return tuple(int(d.get(k, -1)) for k in
                         ("frames_received", "frames_processed", "frames_dropped"))

        got = [m["header"]["stamp"]["sec"] for m in _matches_after(collector, t0)]
        # the event: diagnostics published after the last match (they come once a second)
        assert collector.wait_for(lambda: counts()[1] == len(got), 30), (counts(), len(got))
        received, processed, dropped = counts()
        d = collector.diagnostics[-1]
        # in order, and the newest frame is never dropped
        assert got == sorted(got) and got[-1] == 8039
        # DDS may already replace frames in the subscription's history (KEEP_LAST) before the node
        # sees them; of those it does see, every one is either processed or counted as dropped.
        assert received <= 40 and dropped > 0 and processed + dropped == received
        # the last frame's on-map probability, and how many frames were judged off the map
        assert 0.0 <= float(d["on_map"]) <= 1.0 and 0 <= int(d["frames_off_map"]) <= processed
    finally:
        assert node.stop() == 0, node.log_text()


def test_reload_map_refuses_a_damaged_map_and_keeps_the_old_one(
    tmp_path, map_dir, images, collector
):
    local_map = tmp_path / "map"
    shutil.copytree(map_dir, local_map)
    node = NodeUnderTest(tmp_path, local_map)
    try:
        client = collector.node.create_client(Trigger, "/vpr_localizer/reload_map")
        assert client.wait_for_service(timeout_sec=60), node.log_text()
        places = local_map / "places.csv"
        places.write_text(places.read_text().replace("1010.0", "1011.0"))
        result = client.call(Trigger.Request(), timeout_sec=30)
        assert result is not None and not result.success
        assert "places.csv was altered" in result.message
        pub = _publisher(collector.node, Image, "/test/camera")
        t0 = collector._now()
        pub.publish(_raw(images[2], 9000))
        assert collector.wait_for(
            lambda: 9000 in _secs(collector, t0), 20
        ), node.log_text()
        shutil.rmtree(local_map)
        shutil.copytree(map_dir, local_map)
        result = client.call(Trigger.Request(), timeout_sec=30)
        assert result.success, result.message
        collector.node.destroy_client(client)
    finally:
        assert node.stop() == 0, node.log_text()


def test_node_without_a_map_waits_and_reports_error(tmp_path, images, collector):
    node = NodeUnderTest(tmp_path, tmp_path / "no_such_map")
    try:
        pub = _publisher(collector.node, Image, "/test/camera")
        pub.publish(_raw(images[0], 9500))
        assert collector.wait_for(
            lambda: any(
                d["message"] == "no map loaded" and int(d["frames_without_map"]) >= 1
                for d in collector.diagnostics[-3:]
            ),
            10,
        ), node.log_text()
        assert node.proc.poll() is None
        assert "no map at" in node.log_text() and "vpr-ros build-map" in node.log_text()
    finally:
        assert node.stop() == 0, node.log_text()


def test_dinov2_model_without_weights_is_refused_with_where_to_get_them(tmp_path, map_dir):
    node = NodeUnderTest(tmp_path, map_dir, ["-p", "model:=scicevpr-b"])
    code = node.proc.wait(60)
    log = node.log_text()
    assert code == 2, log
    assert "github.com/shuimushan/SciceVPR" in log and "'weights' parameter" in log


def test_bad_parameter_ends_the_node_with_one_clear_line(tmp_path, map_dir):
    node = NodeUnderTest(tmp_path, map_dir, ["-p", "image_transport:=theora"])
    assert node.proc.wait(60) == 2
    assert "image_transport must be one of raw, compressed; got 'theora'" in node.log_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "override",
    [
        "model:=nope",
        "top_k:=abc",
        "map_path:=123",
        "verify_map:=maybe",
        "diagnostics_period_s:=-1.0",
        "min_confidence:=2.0",
    ],
)
def test_wrong_parameter_types_and_ranges_end_the_node_with_one_line(tmp_path, map_dir, override):
    node = NodeUnderTest(tmp_path, map_dir, ["-p", override])
    assert node.proc.wait(60) == 2
    log = node.log_text()
    assert "invalid parameters: " + override.split(":=")[0] in log and "Traceback" not in log, log


@pytest.mark.slow
def test_interrupt_during_start_up_ends_quietly(tmp_path, map_dir):
    node = NodeUnderTest(tmp_path, map_dir)
    time.sleep(1.0)  # importing torch and loading the model take longer than this
    assert node.stop() in (0, 130)
    assert "Traceback" not in node.log_text(), node.log_text()


def test_help_prints_the_parameters_without_starting_ros():
    script = (
        "import sys\nfrom vpr_ros.ros import entry\ntry:\n    entry.main(['localize',"
        " '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\nassert 'rclpy' not in"
        " sys.modules, 'rclpy was imported'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert (
        "min_confidence (double, default 0.8) [0, 1]" in out.stdout
        and "~/reload_map" in out.stdout
    )


def _set_parameters(node, params: dict) -> list:
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = node.create_client(SetParameters, "/vpr_localizer/set_parameters")
    assert client.wait_for_service(30)
    # The collector's executor spins this node; a blocking call waits on it.
    result = client.call(
        SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in params.items()]
        ),
        timeout_sec=30,
    )
    node.destroy_client(client)
    return result.results


def test_param_set_is_validated_and_applied_without_a_restart(
    tmp_path, map_dir, images, collector
):
    node = NodeUnderTest(tmp_path, map_dir)
    try:
        pub = _publisher(collector.node, Image, "/test/camera")
        (bad,) = _set_parameters(collector.node, {"top_k": 0})
        assert not bad.successful and "top_k must be in [1, 100]" in bad.reason
        (fixed,) = _set_parameters(collector.node, {"model": "fol-b"})
        assert not fixed.successful and "read-only" in fixed.reason.lower()
        (ok,) = _set_parameters(collector.node, {"top_k": 2})
        assert ok.successful, ok.reason
        t0 = collector.node.get_clock().now().nanoseconds
        pub.publish(_raw(perturb(images[3], 7), 9700))
        assert collector.wait_for(lambda: _matches_after(collector, t0), 20), node.log_text()
        assert len(_matches_after(collector, t0)[-1]["candidates"]) == 2
    finally:
        assert node.stop() == 0, node.log_text()


def test_diagnostics_recover_after_a_bad_frame(tmp_path, map_dir, images, collector):
    # a 2 s failure window
    node = NodeUnderTest(tmp_path, map_dir, ["-p", "diagnostics_period_s:=0.2"])
    try:
        pub = _publisher(collector.node, Image, "/test/camera")
        bad = _raw(images[0], 9800)
        bad.data = bad.data[:100]  # truncated raw frame
        pub.publish(bad)
        assert collector.wait_for(
            lambda: any(d["level"] == 1 for d in collector.diagnostics[-3:]), 10
        ), node.log_text()
        for i in range(4):
            pub.publish(_raw(perturb(images[i], i), 9801 + i))
            time.sleep(0.8)
        assert collector.wait_for(
            lambda: collector.diagnostics[-1]["level"] == 0
            and int(collector.diagnostics[-1]["frames_bad"]) >= 1,
            10,
        ), collector.diagnostics[-1]
    finally:
        assert node.stop() == 0, node.log_text()
