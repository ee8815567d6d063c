"""
The `vpr_localizer` node: thin glue between ROS topics and vpr_ros.localizer.

A managed (lifecycle) node: configure loads the model and the map, activate starts the
subscriptions and publishers, deactivate stops them and keeps both loaded, cleanup frees them;
with ``autostart`` (the default) it configures and activates itself.
Images are taken by the subscription callback into a one-frame slot; a worker
thread (off the executor) decodes, localizes and publishes the newest frame.
Bad frames are logged (throttled), counted and skipped: input never kills the node.
Every decision about a match (candidates, confidence, pose prior) is the
localizer's; the node copies fields into messages.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
import traceback
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from vpr_ros import parameters
from vpr_ros.errors import ConfigError, ImageDecodeError, VprError
from vpr_ros.imaging import image_msg_to_rgb
from vpr_ros.inference.factory import create_extractor
from vpr_ros.localizer import Localizer, LocalizerConfig, Match, StageLatency
from vpr_ros.logs import quiet_third_party_logs
from vpr_ros.maps.mapdir import VprMap, load_map
from vpr_ros.msg import PlaceMatch
from vpr_ros.ros.latest_slot import LatestSlot
from vpr_ros.ros.messages import place_match_msg
from vpr_ros.ros.stats import PipelineStats
from vpr_ros.ros.visualization import Visualization
from vpr_ros.stamps import stamp_to_ns

# Changing these needs a new extractor, subscription or timer: they are fixed at start-up.
FIXED_AT_START = (
    "model",
    "weights",
    "backend",
    "precision",
    "engine_cache_dir",
    "image_transport",
    "image_qos",
    "diagnostics_period_s",
    "odom_topic",
    "autostart",
)
# /diagnostics says "off the map" while the last frame's on_map is below this
OFF_MAP = 0.5
# /diagnostics is WARN while a frame failed within this many diagnostics periods
RECENT_FAILURE_PERIODS = 10
# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


class LocalizerNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__(parameters.NODE_NAME)
        self.slot = LatestSlot()
        self._running = True
        self.worker: threading.Thread | None = None
        self.params = self._declare_parameters()
        self.stats = PipelineStats()
        self._map_lock = threading.Lock()
        self.extractor = None
        self.vpr_map: VprMap | None = None
        self.localizer: Localizer | None = None
        self._odom = OdometryDistance()
        self._dropped_seen = 0
        # set while configured: the lifecycle publishers; while active: the inputs and the timer
        self.match_pub = self.pose_pub = self.diag_pub = self.viz = None
        self._reload_service = None
        self._inputs = []
        self._diagnostics_timer = None
        self._on_map: float | None = None  # the last frame's (Match.on_map)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.worker = threading.Thread(target=self._work, name="vpr_inference", daemon=True)
        self.worker.start()

    # -- lifecycle -----------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """
        Load the model and the map, offer ~/reload_map and create the (inactive) publishers.

        A map that fails to load leaves the node waiting for ~/reload_map.
        """
        try:
            self.extractor = create_extractor(
                self.params["model"],
                self.params["weights"] or None,
                self.params["backend"],
                self.params["precision"],
                Path(self.params["engine_cache_dir"]).expanduser()
                if self.params["engine_cache_dir"] else None,
            )
        except VprError as e:  # e.g. a model without weights: one line that says what to do
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(
            f"model {self.params['model']} on {self.extractor.backend}"
            f" ({self.extractor.precision}), "
            f"fingerprint {self.extractor.fingerprint}"
        )
        self._log_map_result(*self._load_map())
        # Single-threaded executor: callbacks only hand frames over; a reload pauses intake while
        # the map loads.
        self._reload_service = self.create_service(Trigger, "~/reload_map", self._on_reload)
        self.match_pub = self.create_lifecycle_publisher(PlaceMatch, "vpr/match", 10)
        self.pose_pub = self.create_lifecycle_publisher(
            PoseWithCovarianceStamped, "vpr/pose_prior", 10
        )
        self.diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        self.viz = Visualization(self)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the publishers, show the map, then subscribe."""
        result = super().on_activate(state)
        self._show_map()
        qos = qos_profile_sensor_data if self.params["image_qos"] == "sensor_data" else QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        if self.params["image_transport"] == "raw":
            self._inputs.append(self.create_subscription(Image, "image", self._on_image, qos))
        else:
            self._inputs.append(
                self.create_subscription(CompressedImage, "image/compressed", self._on_image, qos)
            )
        if self.params["odom_topic"]:
            self._inputs.append(self.create_subscription(
                Odometry, self.params["odom_topic"], self._odom.add, qos_profile_sensor_data
            ))
        self._diagnostics_timer = self.create_timer(
            self.params["diagnostics_period_s"], self._publish_diagnostics
        )
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames and publishing; the model and the map stay loaded."""
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the map and the model; withdraw the publishers and ~/reload_map."""
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        return super().on_shutdown(state)

    def _stop_inputs(self) -> None:
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None

    def _release(self) -> None:
        if self._reload_service is not None:
            self.destroy_service(self._reload_service)
            self._reload_service = None
        with self._map_lock:
            self.vpr_map = self.localizer = None
            if self.viz is not None:
                self.viz.destroy()
                for pub in (self.match_pub, self.pose_pub, self.diag_pub):
                    self.destroy_lifecycle_publisher(pub)
            self.match_pub = self.pose_pub = self.diag_pub = self.viz = None
        self.extractor = None

    def _show_map(self) -> None:
        with self._map_lock:
            vpr_map = self.vpr_map
        if vpr_map is not None and self.viz is not None:
            self.viz.publish_map(vpr_map, self.params["map_frame"], self.params["viz_max_places"])

    # -- parameters ----------------------------------------------------------
    def _declare_parameters(self) -> dict:
        """
        Declare every parameter of the table.

        A wrong type or range ends the node before the model loads.
        """
        for p in parameters.PARAMETERS:
            # Typed by our own check (one message for start-up and `param set`), not by rclpy's
            # exception.
            descriptor = ParameterDescriptor(description=p.description, dynamic_typing=True,
                                             read_only=p.name in FIXED_AT_START,
                                             additional_constraints=_constraints(p))
            self.declare_parameter(p.name, p.default, descriptor)
        values = {p.name: self.get_parameter(p.name).value for p in parameters.PARAMETERS}
        if problems := parameters.problems(values):
            raise ConfigError(
                "invalid parameters: " + "; ".join(problems) + " (see `localize --help`)"
            )
        return values

    def _on_set_parameters(self, params) -> SetParametersResult:
        """
        `ros2 param set`.

        Accept only valid values; the localizer is rebuilt with them, the map kept.
        """
        values = {**self.params, **{p.name: p.value for p in params}}
        if problems := parameters.problems(values):
            return SetParametersResult(successful=False, reason="; ".join(problems))
        previous, self.params = self.params, values
        with self._map_lock:
            if self.vpr_map is not None:
                try:
                    localizer = self._make_localizer(self.vpr_map)
                except VprError as e:  # e.g. rerank set to one whose features this map lacks
                    self.params = previous
                    return SetParametersResult(successful=False, reason=str(e))
                self.localizer = localizer
        return SetParametersResult(successful=True)

    # -- map -----------------------------------------------------------------
    def _make_localizer(self, vpr_map: VprMap) -> Localizer:
        """
        Build a fresh pipeline (and temporal filter) for the map.

        A map without the re-ranker's features is refused.
        """
        return Localizer(vpr_map, self.extractor, LocalizerConfig.from_parameters(self.params))

    def _load_map(self) -> tuple[bool, str]:
        """All or nothing: the current map keeps serving unless the new one loads completely."""
        path = self.params["map_path"]
        if not path:
            return False, "no map_path set: set the map_path parameter and call ~/reload_map"
        try:
            vpr_map = load_map(
                Path(path).expanduser(), self.extractor.describe(),
                verify=self.params["verify_map"],
            )
            localizer = self._make_localizer(vpr_map)
        except VprError as e:
            self.stats.error("map_errors", str(e))
            return False, f"map not loaded: {e}"
        # a loader bug must not take down a node that is serving another map
        except Exception as e:
            self.stats.error("map_errors", f"{type(e).__name__}: {e}")
            return (
                False,
                (
                    f"map not loaded (unexpected {type(e).__name__}: {e}); the previous map, if"
                    " any, keeps serving"
                ),
            )
        with self._map_lock:
            self.vpr_map, self.localizer = vpr_map, localizer
        return True, f"map {vpr_map.map_id} loaded from {path}: {len(vpr_map)} places"

    def _on_reload(self, request, response):
        response.success, response.message = self._load_map()
        self._log_map_result(response.success, response.message)
        if response.success:
            self._show_map()
        return response

    def _log_map_result(self, ok: bool, message: str) -> None:
        # rclpy binds one severity to each logging call site, so the two cases need two calls.
        if ok:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)

    # -- frames --------------------------------------------------------------
    def _on_image(self, msg, info: MessageInfo) -> None:
        # DDS receipt -> this callback: the executor's wake-up and the deserialisation into Python
        # (None where the middleware gives no receipt time)
        dds_ns = info["received_timestamp"]
        take_ms = (time.time_ns() - dds_ns) * 1e-6 if dds_ns > 0 else None
        self.stats.count("received")
        self.slot.put((time.perf_counter(), self.get_clock().now().nanoseconds, take_ms, msg))
        # Hand the GIL to the worker just woken, instead of making it wait until this thread is
        # back in the executor's wait: callback -> worker 0.3 -> 0.1 ms, measured on 2 cores.
        time.sleep(0)

    def _work(self) -> None:
        while self._running:
            item = self.slot.take(timeout=0.5)
            if item is None:
                continue
            try:
                self._process(*item)
            except ImageDecodeError as e:
                self.stats.error("bad_frames", str(e))
                self.get_logger().warning(
                    f"skipped a bad frame: {e}",
                    throttle_duration_sec=self.params["log_throttle_s"],
                )
            except Exception as e:  # the node must outlive any single frame
                self.stats.error("errors", f"{type(e).__name__}: {e}")
                self.get_logger().error(
                    f"frame failed: {traceback.format_exc()}",
                    throttle_duration_sec=self.params["log_throttle_s"],
                )

    def _process(self, received: float, received_ns: int, take_ms: float | None, msg) -> None:
        with self._map_lock:
            localizer = self.localizer
        if localizer is None:
            self.stats.count("no_map")
            self.get_logger().warning(
                "no map loaded; frames are skipped until ~/reload_map succeeds",
                throttle_duration_sec=self.params["log_throttle_s"],
            )
            return
        t0 = time.perf_counter()
        rgb = image_msg_to_rgb(msg, max_pixels=self.params["max_image_pixels"])
        t1 = time.perf_counter()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        dropped = self.slot.dropped
        # camera frames since the last one
        frames, self._dropped_seen = 1 + dropped - self._dropped_seen, dropped
        # queue: waiting in the slot for the worker; decode: message -> RGB.
        frame_id = msg.header.frame_id or self.params["camera_frame"]
        # age_at_receipt: how old the image was when it arrived (camera + transport delay); it and
        # take are outside the node's total.
        latency = StageLatency(age_at_receipt=(received_ns - stamp_ns) * 1e-6, take=take_ms,
                               queue=(t0 - received) * 1e3, decode=(t1 - t0) * 1e3)
        match = localizer.localize(rgb, stamp_ns, frame_id, latency,
                                   travelled_m=self._odom.take(), frames=frames)
        out, in_map = place_match_msg(match), Header(stamp=msg.header.stamp,
                                                     frame_id=self.params["map_frame"])
        with self._map_lock:  # not while cleanup withdraws the publishers
            if self.match_pub is None:
                return
            self.match_pub.publish(out)
            if match.pose_prior is not None:
                self.pose_pub.publish(self._pose_prior_msg(match, in_map))
                self.stats.count("pose_priors")
            self.viz.publish_match(match, in_map)
        self.stats.count("processed")
        self.stats.latency(match.latency_ms.total)
        self._on_map = match.on_map
        if match.on_map is not None and match.on_map < OFF_MAP:
            self.stats.count("off_map")

    def _pose_prior_msg(self, match: Match, header: Header) -> PoseWithCovarianceStamped:
        prior = match.pose_prior
        out = PoseWithCovarianceStamped(header=header)
        pose = out.pose.pose
        pose.position.x, pose.position.y, pose.position.z = prior.position
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (
            prior.orientation
        )
        out.pose.covariance = prior.covariance
        return out

    # -- diagnostics ---------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        window_s = RECENT_FAILURE_PERIODS * self.params["diagnostics_period_s"]
        snap = self.stats.snapshot(recent_s=window_s)
        counts = {**snap["counts"], "dropped": self.slot.dropped}
        recent = snap["recent_failures"]
        with self._map_lock:
            vpr_map = self.vpr_map
        status = DiagnosticStatus(
            name="vpr_localizer: pipeline", hardware_id=self.extractor.backend
        )
        if vpr_map is None:
            status.level, status.message = DiagnosticStatus.ERROR, "no map loaded"
        elif recent:
            status.level = DiagnosticStatus.WARN
            status.message = (
                f"{recent} frames failed in the last {window_s:g} s: {snap['last_error'][:200]}"
            )
        elif self._on_map is not None and self._on_map < OFF_MAP:
            # not a fault of the node (silence is its answer there), so not WARN
            status.level = DiagnosticStatus.OK
            status.message = (
                f"off the map (on_map {self._on_map:.2f} on the last frame): no pose priors"
            )
        else:
            status.level, status.message = DiagnosticStatus.OK, "localizing"
        values = {
            "frames_received": counts.get("received", 0),
            "frames_processed": counts.get("processed", 0),
            "frames_dropped": counts["dropped"],
            "frames_bad": counts.get("bad_frames", 0),
            "frames_failed": counts.get("errors", 0),
            "frames_failed_recently": recent,
            "frames_without_map": counts.get("no_map", 0),
            "pose_priors": counts.get("pose_priors", 0),
            "on_map": "" if self._on_map is None else round(self._on_map, 3),
            "frames_off_map": counts.get("off_map", 0),
            "map_load_errors": counts.get("map_errors", 0),
            "rate_in_hz": round(snap["rates_hz"]["received"], 2),
            "rate_out_hz": round(snap["rates_hz"]["processed"], 2),
            "latency_p50_ms": round(snap["latency_ms"]["p50"], 2) if snap["latency_ms"] else "",
            "latency_p95_ms": round(snap["latency_ms"]["p95"], 2) if snap["latency_ms"] else "",
            "backend": f"{self.extractor.backend}/{self.extractor.precision}",
            "model": self.extractor.spec.name,
            "map_id": vpr_map.map_id if vpr_map else "",
            "map_places": len(vpr_map) if vpr_map else 0,
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


class OdometryDistance:
    """
    Distance travelled between processed frames, from nav_msgs/Odometry.

    Signed: negative when reversing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None
        self._travelled: float | None = None  # None: no odometry since the last frame

    def add(self, msg: Odometry) -> None:
        p = msg.pose.pose.position
        with self._lock:
            if self._last is not None:
                step = math.dist(self._last, (p.x, p.y))
                self._travelled = (self._travelled or 0.0) + (
                    step if msg.twist.twist.linear.x >= 0 else -step
                )
            self._last = (p.x, p.y)

    def take(self) -> float | None:
        with self._lock:
            travelled, self._travelled = self._travelled, None
            return travelled


def _constraints(p: parameters.Parameter) -> str:
    parts = [f"one of {', '.join(p.choices)}"] if p.choices else []
    if p.min is not None or p.max is not None:
        parts.append(f"range [{'' if p.min is None else p.min}, {'' if p.max is None else p.max}]")
    return "; ".join(parts)


def keep_freed_frame_memory() -> bool:
    """
    Keep freed frame-sized buffers in this process's heap instead of giving them back to the OS.

    Every raw frame passes through several ~1 MB buffers (the DDS sample, the C message, Python's
    bytes and array). With glibc's default thresholds each is a fresh mmap, page-faulted in and
    unmapped again: publish -> callback took 2.9 ms for a 640x480 frame, not 1.5 ms, in a bare
    subscriber on 2 cores. The node mostly escaped it by accident (freeing the model's large
    loading buffers raises glibc's dynamic threshold); this makes it independent of the backend.
    False (and nothing changed) where the C library has no mallopt (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # Allocations below 16 MiB come from the heap; up to 64 MiB of free heap stays mapped.
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, 16 << 20)
    return bool(mmap_ok and mallopt(_M_TRIM_THRESHOLD, 64 << 20))


def run(args: list[str] | None = None) -> int:
    """
    Spin the node until shutdown.

    0 on a normal stop, 2 on a configuration error (one line printed), including a failed
    configure transition under ``autostart``.
    """
    quiet_third_party_logs()
    keep_freed_frame_memory()
    rclpy.init(args=args)
    node = None
    try:
        node = LocalizerNode()
        if node.params["autostart"]:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return 2
            node.trigger_activate()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except VprError as e:
        # Configuration errors (model without weights, bad parameter) end the node with one clear
        # line.
        print(f"{parameters.NODE_NAME}: {e}", flush=True)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
