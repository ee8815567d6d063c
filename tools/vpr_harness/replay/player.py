"""
Replay a bag's image topic onto a live topic at camera rate, restamped like a live camera.

    python -m vpr_harness.replay.player --bag B --topic /camera/image_raw --sent-log sent.json

The bag's messages are published as they are (no re-encoding); each gets the
current time as its stamp, and sent.json records (frame index, live stamp, bag
stamp) so a collector can find which frame a match belongs to.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from vpr_ros.errors import BagError, VprError
from vpr_ros.maps.sources import open_bag

_TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}


def read_image_messages(bag: Path, topic: str) -> tuple[type, list]:
    """All messages of ``topic`` as rclpy messages, in bag order (bounded by the bag's size)."""
    with open_bag(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns or conns[0].msgtype not in _TYPES:
            have = ", ".join(f"{c.topic} ({c.msgtype})" for c in reader.connections)
            raise BagError(f"{bag} has no Image/CompressedImage topic {topic}; it has: {have}")
        cls = _TYPES[conns[0].msgtype]
        out = []
        for conn, stamp, raw in reader.messages(connections=conns):
            m = reader.deserialize(raw, conn.msgtype)
            msg = cls()
            msg.header.frame_id = m.header.frame_id
            if cls is Image:
                msg.height, msg.width, msg.encoding = m.height, m.width, m.encoding
                msg.is_bigendian, msg.step = m.is_bigendian, m.step
            else:
                msg.format = m.format
            msg.data = m.data.tobytes()
            out.append((stamp, msg))
        return cls, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--bag", type=Path, required=True, help="rosbag2 directory")
    ap.add_argument("--topic", required=True, help="image topic in the bag")
    ap.add_argument("--out-topic", help="live topic to publish on (default: --topic)")
    ap.add_argument(
        "--rate", type=float, default=0.0, help="frames per second (default: the bag's own timing)"
    )
    ap.add_argument("--wait-subscriber", type=float, default=60.0,
                    help="seconds to wait for a subscriber (default: %(default)s)")
    ap.add_argument("--sent-log", type=Path, help="JSON file of what was sent")
    ap.add_argument("--limit", type=int, default=0, help="send at most this many frames (0: all)")
    a = ap.parse_args(argv)

    try:
        cls, messages = read_image_messages(a.bag, a.topic)
    except VprError as err:
        print(f"player: {err}", flush=True)
        return 2
    if a.limit:
        messages = messages[: a.limit]
    rclpy.init()
    node = rclpy.create_node("vpr_bag_player")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(cls, a.out_topic or a.topic, qos)
    deadline = time.monotonic() + a.wait_subscriber
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if pub.get_subscription_count() == 0:
        print(
            f"player: nobody subscribed to {pub.topic_name} within {a.wait_subscriber} s",
            flush=True,
        )
        return 1
    time.sleep(0.5)  # let discovery settle on both sides before the first frame
    sent = []
    t_start = time.monotonic()
    bag_t0 = messages[0][0] if messages else 0
    for i, (bag_stamp, msg) in enumerate(messages):
        due = t_start + (i / a.rate if a.rate > 0 else (bag_stamp - bag_t0) * 1e-9)
        time.sleep(max(0.0, due - time.monotonic()))
        now = node.get_clock().now()
        msg.header.stamp = now.to_msg()
        pub.publish(msg)
        sent.append([i, now.nanoseconds, bag_stamp])
    if a.sent_log:
        a.sent_log.write_text(json.dumps({"topic": pub.topic_name, "frames": sent}))
    print(f"player: sent {len(sent)} frames in {time.monotonic() - t_start:.1f} s", flush=True)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
