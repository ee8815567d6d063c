"""The `vpr_localizer` node: thin glue between ROS topics and vpr_ros.localizer.

Images are taken by the subscription callback into a one-frame slot; a worker
thread (off the executor) decodes, localizes and publishes the newest frame.
Bad frames are logged (throttled), counted and skipped: input never kills the node.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data, ReliabilityPolicy, HistoryPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from vpr_ros.errors import ConfigError, ImageDecodeError, VprError
from vpr_ros.imaging import image_msg_to_rgb
from vpr_ros.index.sequence import SequenceConfig
from vpr_ros.inference.factory import create_extractor
from vpr_ros.localizer import Localizer, Match
from vpr_ros.maps.mapdir import load_map
from vpr_ros.ros.latest_slot import LatestSlot
from vpr_ros.ros.stats import PipelineStats

# name: (default, description); config/localize.yaml lists the same, with comments.
PARAMETERS = {
    "map_path": ("", "Map directory written by `vpr-ros build-map`."),
    "model": ("baseline", "Descriptor model; must be the map's model (see `vpr-ros inspect-map`)."),
    "weights": ("", "Checkpoint file for models that need official weights (empty for baseline)."),
    "backend": ("auto", "auto|torch|onnxruntime|tensorrt; auto picks TensorRT, else ONNX Runtime, else torch."),
    "precision": ("fp32", "fp32|fp16|bf16|int8, where the backend supports it."),
    "engine_cache_dir": ("", "Where exported ONNX files and TensorRT engines are cached (empty: $VPR_ROS_CACHE_DIR or ~/.cache/vpr_ros)."),
    "image_transport": ("raw", "raw: subscribe `image` (sensor_msgs/Image); compressed: `image/compressed`."),
    "image_qos": ("sensor_data", "sensor_data (best effort, depth 5) or reliable (depth 10)."),
    "camera_frame": ("camera", "frame_id used when an incoming image has an empty one."),
    "map_frame": ("map", "frame_id of /vpr/pose_prior; the map's positions are in this frame."),
    "top_k": (5, "Candidates reported per frame."),
    "min_confidence": (0.05, "Publish /vpr/pose_prior only at or above this confidence (0..1)."),
    "ambiguity_radius_m": (25.0, "Candidates farther than this from the best one count as alternative places."),
    "base_sigma_m": (5.0, "Position standard deviation of an unambiguous match, metres."),
    "sequence_length": (0, "Frames of SeqSLAM-style temporal filtering; 0 or 1: off (each frame on its own)."),
    "sequence_min_velocity": (0.8, "Slowest travel the sequence filter tries, in map places per camera frame."),
    "sequence_max_velocity": (1.25, "Fastest travel the sequence filter tries, in map places per camera frame."),
    "max_image_pixels": (50_000_000, "Larger images are rejected as bad input."),
    "diagnostics_period_s": (1.0, "Period of /diagnostics."),
    "log_throttle_s": (5.0, "Minimum seconds between repeated warnings of the same kind."),
    "verify_map": (True, "Check every map file's sha256 when loading (slower for large maps)."),
}


def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class LocalizerNode(Node):
    def __init__(self) -> None:
        super().__init__("vpr_localizer")
        self.slot = LatestSlot()
        self._running = True
        self.worker: threading.Thread | None = None
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.p = p
        self.stats = PipelineStats()
        self._map_lock = threading.Lock()
        self.localizer: Localizer | None = None
        # Parameter mistakes end the node before the (slow) model load.
        if p["image_qos"] not in ("sensor_data", "reliable"):
            raise ConfigError(f"image_qos must be sensor_data or reliable, not {p['image_qos']!r}")
        if p["image_transport"] not in ("raw", "compressed"):
            raise ConfigError(f"image_transport must be raw or compressed, not {p['image_transport']!r}")

        self.extractor = create_extractor(p["model"], p["weights"] or None, p["backend"], p["precision"],
                                          Path(p["engine_cache_dir"]).expanduser() if p["engine_cache_dir"] else None)
        self.get_logger().info(f"model {p['model']} on {self.extractor.backend} ({self.extractor.precision}), "
                               f"fingerprint {self.extractor.fingerprint}")
        self._log_map_result(*self._load_map())

        self.match_pub = self.create_publisher(String, "/vpr/match", 10)
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "/vpr/pose_prior", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        qos = qos_profile_sensor_data if p["image_qos"] == "sensor_data" else QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        if p["image_transport"] == "raw":
            self.create_subscription(Image, "image", self._on_image, qos)
        else:
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, qos)

        # Single-threaded executor: callbacks only hand frames over; a reload pauses intake while the map loads.
        self.create_service(Trigger, "~/reload_map", self._on_reload)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)

        self.worker = threading.Thread(target=self._work, name="vpr_inference", daemon=True)
        self.worker.start()

    # -- map -----------------------------------------------------------------
    def _load_map(self) -> tuple[bool, str]:
        path = self.p["map_path"]
        if not path:
            return False, "no map_path set: set the map_path parameter and call ~/reload_map"
        try:
            vpr_map = load_map(Path(path).expanduser(), self.extractor.describe(), verify=self.p["verify_map"])
        except VprError as e:
            self.stats.error("map_errors", str(e))
            return False, f"map not loaded: {e}"
        sequence = SequenceConfig(length=max(self.p["sequence_length"], 1), min_velocity=self.p["sequence_min_velocity"],
                                  max_velocity=self.p["sequence_max_velocity"])
        localizer = Localizer(vpr_map, self.extractor, self.p["top_k"], self.p["ambiguity_radius_m"], self.p["base_sigma_m"], sequence)
        with self._map_lock:
            self.localizer = localizer
        return True, f"map {vpr_map.map_id} loaded from {path}: {len(vpr_map)} places"

    def _on_reload(self, request, response):
        self.p["map_path"] = self.get_parameter("map_path").value
        response.success, response.message = self._load_map()
        self._log_map_result(response.success, response.message)
        return response

    def _log_map_result(self, ok: bool, message: str) -> None:
        # rclpy binds one severity to each logging call site, so the two cases need two calls.
        if ok:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)

    # -- frames --------------------------------------------------------------
    def _on_image(self, msg) -> None:
        self.stats.count("received")
        self.slot.put((time.perf_counter(), self.get_clock().now().nanoseconds, msg))

    def _work(self) -> None:
        while self._running:
            item = self.slot.take(timeout=0.5)
            if item is None:
                continue
            try:
                self._process(*item)
            except ImageDecodeError as e:
                self.stats.error("bad_frames", str(e))
                self.get_logger().warning(f"skipped a bad frame: {e}", throttle_duration_sec=self.p["log_throttle_s"])
            except Exception as e:  # the node must outlive any single frame
                self.stats.error("errors", f"{type(e).__name__}: {e}")
                self.get_logger().error(f"frame failed: {traceback.format_exc()}", throttle_duration_sec=self.p["log_throttle_s"])

    def _process(self, received: float, received_ns: int, msg) -> None:
        with self._map_lock:
            localizer = self.localizer
        if localizer is None:
            self.stats.count("no_map")
            self.get_logger().warning("no map loaded; frames are skipped until ~/reload_map succeeds",
                                      throttle_duration_sec=self.p["log_throttle_s"])
            return
        t0 = time.perf_counter()
        rgb = image_msg_to_rgb(msg, max_pixels=self.p["max_image_pixels"])
        t1 = time.perf_counter()
        frame_id = msg.header.frame_id or self.p["camera_frame"]
        stamp_ns = _stamp_ns(msg.header.stamp)
        # queue: waiting in the slot for the worker; decode: message -> RGB.
        match = localizer.localize(rgb, stamp_ns, frame_id, {"queue": (t0 - received) * 1e3, "decode": (t1 - t0) * 1e3})
        # How old the image was when it arrived (camera + transport delay); not part of the node's total.
        match.latency_ms["age_at_receipt"] = (received_ns - stamp_ns) * 1e-6
        self.match_pub.publish(String(data=match.to_json()))
        if match.confidence >= self.p["min_confidence"] and match.covariance_xy is not None:
            self.pose_pub.publish(self._pose_prior(match, msg.header.stamp))
            self.stats.count("pose_priors")
        self.stats.count("processed")
        self.stats.latency(match.latency_ms["total"])

    def _pose_prior(self, match: Match, stamp) -> PoseWithCovarianceStamped:
        best = match.best
        out = PoseWithCovarianceStamped()
        out.header.stamp = stamp
        out.header.frame_id = self.p["map_frame"]
        pose = out.pose.pose
        pose.position.x, pose.position.y, pose.position.z = best.position
        q = best.orientation or (0.0, 0.0, 0.0, 1.0)
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = q
        cov = [0.0] * 36  # row-major x, y, z, roll, pitch, yaw
        (cov[0], cov[1]), (cov[6], cov[7]) = match.covariance_xy
        cov[14] = 4.0 * self.p["base_sigma_m"] ** 2  # height is weakly observed by place recognition
        cov[21] = cov[28] = 0.1  # roll, pitch: ~18 deg
        # The map image's heading is roughly the camera's; unknown when the map had no orientation.
        cov[35] = 0.35**2 if best.orientation else math.pi**2
        out.pose.covariance = cov
        return out

    # -- diagnostics ---------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        counts = {**snap["counts"], "dropped": self.slot.dropped}
        with self._map_lock:
            localizer = self.localizer
        status = DiagnosticStatus(name="vpr_localizer: pipeline", hardware_id=self.extractor.backend)
        if localizer is None:
            status.level, status.message = DiagnosticStatus.ERROR, "no map loaded"
        elif snap["last_error"] and (counts.get("bad_frames", 0) or counts.get("errors", 0)):
            status.level, status.message = DiagnosticStatus.WARN, f"some frames failed: {snap['last_error'][:200]}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "localizing"
        values = {
            "frames_received": counts.get("received", 0),
            "frames_processed": counts.get("processed", 0),
            "frames_dropped": counts["dropped"],
            "frames_bad": counts.get("bad_frames", 0),
            "frames_failed": counts.get("errors", 0),
            "frames_without_map": counts.get("no_map", 0),
            "pose_priors": counts.get("pose_priors", 0),
            "rate_in_hz": round(snap["rates_hz"]["received"], 2),
            "rate_out_hz": round(snap["rates_hz"]["processed"], 2),
            "latency_p50_ms": round(snap["latency_ms"]["p50"], 2) if snap["latency_ms"] else "",
            "latency_p95_ms": round(snap["latency_ms"]["p95"], 2) if snap["latency_ms"] else "",
            "backend": f"{self.extractor.backend}/{self.extractor.precision}",
            "model": self.extractor.spec.name,
            "map_id": localizer.map.map_id if localizer else "",
            "map_places": len(localizer.map) if localizer else 0,
            "last_error": snap["last_error"],
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def destroy_node(self) -> None:
        self._running = False
        self.slot.close()
        if self.worker is not None:
            self.worker.join(timeout=5.0)
        super().destroy_node()


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = LocalizerNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except VprError as e:
        # Configuration errors (model without weights, bad parameter) end the node with one clear line.
        print(f"vpr_localizer: {e}", flush=True)
        raise SystemExit(2) from None
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
