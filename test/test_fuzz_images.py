"""Image fuzzing (issue 9 campaign): generated Image/CompressedImage messages through the conversion
layer give a decoded image or an ImageDecodeError with a reason, never anything else. CI-sized here;
bench/bench_reliability.py runs 10,000 and more."""

from __future__ import annotations

import pytest

from vpr_ros.imaging import SUPPORTED_ENCODINGS
from vpr_ros.replay.fuzz_images import COMPRESSED_DAMAGES, RAW_DAMAGES, run_image_campaign

N = 2500


def test_generated_messages_never_crash_the_decoder() -> None:
    result = run_image_campaign(N, seed=1)
    assert result["crashes"] == 0, result["crash_examples"]
    assert result["inputs"] == N == result["decoded"] + result["refused"]
    # The campaign reached every encoding, both compressed formats and every kind of damage.
    labels = result["labels"]
    assert {label.split("/")[1] for label in labels if label.startswith("raw/")} == set(SUPPORTED_ENCODINGS)
    assert {label.split("/")[1] for label in labels if label.startswith("compressed/")} == {"jpeg", "png"}
    assert {label.split("/")[2] for label in labels} == set(RAW_DAMAGES) | set(COMPRESSED_DAMAGES)
    # Refusals carry reasons that name the problem; valid messages decoded (checked per message above).
    assert result["refused"] > N / 4 and result["decoded"] > N / 4
    for reason in ("too many pixels", "truncated JPEG", "data size differs from step*height", "unsupported encoding"):
        assert result["reasons"][reason] > 0, reason


def test_the_campaign_is_deterministic_in_its_seed() -> None:
    a, b = run_image_campaign(200, seed=7), run_image_campaign(200, seed=7)
    assert a["labels"] == b["labels"] and a["reasons"] == b["reasons"]


# --- the same messages through a live node in its own process ------------------------------------

def _as_rclpy(case, stamp_s: int):
    """The generated message as an rclpy message (uint32 fields wrap as they would on the wire)."""
    from sensor_msgs.msg import CompressedImage, Image

    m = case.msg
    data = bytes(m.data) if not hasattr(m.data, "tobytes") else m.data.tobytes()
    if hasattr(m, "format"):
        msg = CompressedImage(format=m.format)
    else:
        msg = Image(height=m.height % 2**32, width=m.width % 2**32, encoding=m.encoding,
                    is_bigendian=m.is_bigendian % 256, step=m.step % 2**32)
    msg.data = data
    msg.header.stamp.sec, msg.header.frame_id = stamp_s, "fuzz"
    return msg


def _offline_refused(msg) -> bool:
    from vpr_ros.errors import ImageDecodeError
    from vpr_ros.imaging import image_msg_to_rgb

    try:
        image_msg_to_rgb(msg)
    except ImageDecodeError:
        return True
    return False


@pytest.mark.slow
def test_live_node_survives_bad_messages_and_keeps_matching(tmp_path) -> None:
    pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")
    import time

    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from rosutil import build_test_map, place_images
    from vpr_ros.imaging import rgb_to_image_fields
    from vpr_ros.replay.collector import OutputCollector
    from vpr_ros.replay.fuzz_images import messages
    from vpr_ros.replay.processes import start_node, stop_process

    images = place_images(6)
    map_dir = build_test_map(tmp_path / "map", images)
    damaged = [c for c in messages(1400, seed=3) if c.expected_shape is None]
    collector = OutputCollector()
    sent_bad = 0
    try:
        for transport, cls, topic in (("raw", Image, "/fuzz/camera"), ("compressed", CompressedImage, "/fuzz/camera/compressed")):
            batch = [c for c in damaged if hasattr(c.msg, "format") == (transport == "compressed")][:300]
            good = []
            for i in range(6):
                if transport == "raw":
                    msg = Image(**{k: v for k, v in rgb_to_image_fields(images[i], "rgb8").items() if k != "data"})
                    msg.data = rgb_to_image_fields(images[i], "rgb8")["data"].tobytes()
                else:
                    from vpr_ros.imaging import rgb_to_compressed

                    fmt, data = rgb_to_compressed(images[i], "jpeg", 95)
                    msg = CompressedImage(format=fmt)
                    msg.data = data
                msg.header.stamp.sec, msg.header.frame_id = 20_000 + i, "good"
                good.append(msg)
            log_path = tmp_path / f"node_{transport}.log"
            node = start_node(map_dir, "baseline", topic, log_path,
                              extra=["-p", "image_qos:=reliable", "-p", "log_throttle_s:=1.0"])
            started = time.monotonic()
            try:
                pub = collector.node.create_publisher(cls, topic, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
                deadline = time.monotonic() + 60
                while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert pub.get_subscription_count() > 0, (tmp_path / f"node_{transport}.log").read_text()
                time.sleep(0.5)
                t0 = collector._now()
                expected_bad = 0
                for k, case in enumerate(batch):
                    msg = _as_rclpy(case, 10_000 + k)
                    expected_bad += _offline_refused(msg)
                    pub.publish(msg)
                    time.sleep(0.004)  # bad frames take the node well under this: none should be dropped
                    if k % 50 == 49:  # a good frame among the bad: it must still be matched
                        time.sleep(0.1)
                        pub.publish(good[k // 50])
                        time.sleep(0.4)
                sent_bad += len(batch)

                def matched():
                    return {m["stamp"]["sec"]: m for t, m in collector.matches if t >= t0 and m["frame_id"] == "good"}

                assert collector.wait_for(lambda: len(matched()) == 6, 30), (tmp_path / f"node_{transport}.log").read_text()
                for sec, m in matched().items():
                    assert m["candidates"][0]["place_id"] == sec - 20_000
                time.sleep(1.5)  # one more diagnostics period
                d = collector.diagnostics[-1]
                bad, failed = int(d["frames_bad"]), int(d["frames_failed"])
                received, processed, dropped = int(d["frames_received"]), int(d["frames_processed"]), int(d["frames_dropped"])
                assert node.poll() is None, "the node died"
                assert failed == 0, (tmp_path / f"node_{transport}.log").read_text()[-3000:]
                assert received == len(batch) + 6 and received == processed + dropped + bad
                assert bad + dropped >= expected_bad and bad >= expected_bad - dropped and expected_bad > 200
            finally:
                assert stop_process(node) == 0
                collector.node.destroy_publisher(pub)
            # Bad frames are logged throttled (log_throttle_s 1.0) with their reason, and nothing
            # else reaches the log: no decoder lines such as libjpeg's "Corrupt JPEG data" per frame.
            lines = log_path.read_text().splitlines()
            warnings = [line for line in lines if "skipped a bad frame" in line]
            assert 0 < len(warnings) <= time.monotonic() - started + 2, len(warnings)
            assert not [line for line in lines if line.startswith(("Corrupt JPEG", "libpng", "Premature end"))]
    finally:
        collector.close()
    assert sent_bad >= 500
