"""
Listen to the node's outputs and keep what arrives, with receive times.

Used by the demo, tests and benchmark.
"""

from __future__ import annotations

import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.executors import SingleThreadedExecutor

from vpr_ros.msg import PlaceMatch
from vpr_ros.ros.messages import message_fields


class OutputCollector:
    """Subscribes /vpr/match, /vpr/pose_prior and /diagnostics on its own node and spin thread."""

    def __init__(self) -> None:
        if not rclpy.ok():
            rclpy.init()
        self.node = rclpy.create_node("vpr_output_collector")
        # (receive time ns, the PlaceMatch's fields: the JSON of `vpr-ros localize`)
        self.matches: list[tuple[int, dict]] = []
        self.pose_priors: list[tuple[int, PoseWithCovarianceStamped]] = []
        self.diagnostics: list[dict] = []
        self.node.create_subscription(PlaceMatch, "/vpr/match", self._on_match, 100)
        self.node.create_subscription(
            PoseWithCovarianceStamped, "/vpr/pose_prior", self._on_pose, 100
        )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _now(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _on_match(self, msg: PlaceMatch) -> None:
        self.matches.append((self._now(), message_fields(msg)))

    def _on_pose(self, msg: PoseWithCovarianceStamped) -> None:
        self.pose_priors.append((self._now(), msg))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("vpr_localizer"):
                self.diagnostics.append(
                    {
                        "level": (
                            int.from_bytes(status.level, "little")
                            if isinstance(status.level, bytes)
                            else int(status.level)
                        ),
                        "message": status.message,
                        **{kv.key: kv.value for kv in status.values},
                    }
                )

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self._executor.shutdown()
        self._thread.join(timeout=5.0)  # a spin thread alive at exit aborts the interpreter
        self.node.destroy_node()
