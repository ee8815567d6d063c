"""
The pipeline's and the node's options, in one table: name, default, description, allowed values.

The node declares exactly these (with their ranges in the ParameterDescriptor),
validates them at start-up and on every ``ros2 param set``, ``localize --help``
prints them, and ``config/localize.yaml`` is generated from them
(``python -m vpr_ros.parameters > config/localize.yaml``; a test keeps it current).
The pipeline's options (``config`` set) are also ``LocalizerConfig``'s fields, defaults and
checks, and the flags of ``vpr-ros localize`` and ``eval``. No ROS import here.
"""

from __future__ import annotations

import math
import sys
import textwrap
from dataclasses import dataclass
from numbers import Integral, Real

from vpr_ros.confidence import DEFAULT_MIN_CONFIDENCE
from vpr_ros.temporal import TEMPORAL_FILTERS
from vpr_ros.temporal.seqslam import SequenceConfig
from vpr_ros.inference import BACKENDS, PRECISIONS

NODE_NAME = "vpr_localizer"
Value = bool | int | float | str


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Value
    description: str
    choices: tuple[str, ...] = ()
    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    # the LocalizerConfig field it sets ("member.field" inside a member); '' for the node's own
    config: str = ""

    @property
    def type_name(self) -> str:
        return {bool: "bool", int: "integer", float: "double", str: "string"}[type(self.default)]

    def problem(self, value: object) -> str:
        """Why ``value`` is not acceptable for this parameter ('' when it is)."""
        expected = type(self.default)
        ok_type = isinstance(value, expected)
        if expected in (int, float):  # numpy's numbers too (a LocalizerConfig built from arrays)
            number = Integral if expected is int else Real
            ok_type = isinstance(value, number) and not isinstance(value, bool)
        if not ok_type:
            article = "an" if self.type_name == "integer" else "a"
            return (
                f"{self.name} must be {article} {self.type_name}, got {value!r}"
                f" ({type(value).__name__})"
            )
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}"
        if expected in (int, float):
            if isinstance(value, float) and not math.isfinite(value):
                return f"{self.name} must be a finite number, got {value!r}"
            if (self.min is not None and value < self.min) or (
                self.max is not None and value > self.max
            ):
                return (
                    f"{self.name} must be in [{_bound(self.min)}, {_bound(self.max)}], got"
                    f" {value!r}"
                )
        return ""


def _bound(x: float | None) -> str:
    return "unbounded" if x is None else f"{x:g}"


def _model_names() -> tuple[str, ...]:
    from vpr_ros.models.registry import names

    return tuple(names())


def _reranker_names() -> tuple[str, ...]:
    from vpr_ros.rerank import reranker_names

    return reranker_names()


PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        "map_path",
        "",
        "Map directory written by `vpr-ros build-map`. Empty: the node starts without a map "
        "and waits for ~/reload_map after you set this parameter.",
    ),
    Parameter(
        "model",
        "baseline",
        "Descriptor model; must be the model the map was built with (see `vpr-ros inspect-map`).",
        choices=_model_names(),
    ),
    Parameter(
        "weights", "", "Official checkpoint file for the DINOv2-based models; empty for baseline."
    ),
    Parameter(
        "backend",
        "auto",
        "Inference backend. auto: TensorRT where a GPU and tensorrt are present, else the"
        " fastest CPU backend for this model on this host, measured once (a few seconds per"
        " candidate) and cached in engine_cache_dir; the log says which and why.",
        choices=BACKENDS,
    ),
    Parameter(
        "precision",
        "fp32",
        "fp32 | fp16 (GPU) | bf16 | int8 (dynamic int8 on CPU, calibrated on TensorRT), where"
        " the backend supports it; auto (with backend auto): the fastest precision whose"
        " descriptors stay within cosine 0.99 of fp32. The first start with auto builds every"
        " candidate (torch-compile: about a minute for a ViT); later starts read the cache.",
        choices=PRECISIONS,
    ),
    Parameter(
        "engine_cache_dir",
        "",
        "Where exported ONNX files, TensorRT engines, compiled torch packages and auto's backend"
        " choice are cached, keyed by model, weights, precision, input size, CPU or GPU and"
        " library versions. Empty: $VPR_ROS_CACHE_DIR, else ~/.cache/vpr_ros.",
    ),
    Parameter(
        "image_transport",
        "raw",
        "raw: subscribe `image` (sensor_msgs/Image); compressed: `image/compressed`.",
        choices=("raw", "compressed"),
    ),
    Parameter(
        "image_qos",
        "sensor_data",
        "sensor_data: best effort, depth 5 (matches camera drivers); reliable: depth 10.",
        choices=("sensor_data", "reliable"),
    ),
    Parameter("camera_frame", "camera", "frame_id used when an incoming image has an empty one."),
    Parameter(
        "map_frame",
        "map",
        "frame_id of /vpr/pose_prior; map positions (UTM metres for GPS maps) are in it.",
    ),
    Parameter("top_k", 5, "Candidates per frame in /vpr/match.", min=1, max=100, config="top_k"),
    Parameter(
        "rerank",
        "auto",
        "Re-ranking of the global top candidates by local features: none; auto (the re-ranker"
        " whose features the map holds, none when it holds none); or a re-ranker by name, which"
        " the map must hold features for (`vpr-ros build-map --rerank NAME`).",
        choices=("none", "auto", *_reranker_names()),
        config="rerank",
    ),
    Parameter(
        "rerank_top_k", 10, "Global candidates the re-ranker re-sorts per frame.", min=1, max=100,
        config="rerank_top_k",
    ),
    Parameter(
        "temporal",
        "hmm",
        "Temporal filter over the frame sequence: hmm follows the robot along the map's route"
        " (speed changes, stops with odometry, kidnapping: it resets and says so in the match),"
        " looking only at the top candidates so its cost does not grow with the map; seqslam is"
        " the classic SeqSLAM over every map place (sequence_* parameters); none matches each"
        " frame on its own.",
        choices=TEMPORAL_FILTERS,
        config="temporal",
    ),
    Parameter(
        "odom_topic",
        "",
        "nav_msgs/Odometry topic whose travelled distance drives the hmm filter's motion "
        "model; empty: a speed prior wide enough for stops and 3x speed changes.",
    ),
    Parameter(
        "min_confidence",
        DEFAULT_MIN_CONFIDENCE,
        "/vpr/pose_prior is published only at or above this confidence: the calibrated probability"
        " that the best place is right (ratio-test margin, plus the hmm filter's support). On the"
        " demo route 0.8 gives a prior for 79 % of frames, all of them right.",
        min=0.0,
        max=1.0,
        config="min_confidence",
    ),
    Parameter(
        "ambiguity_radius_m",
        25.0,
        "Candidates farther than this from the best one count as other places.",
        min=0.0,
        config="ambiguity_radius_m",
    ),
    Parameter(
        "base_sigma_m",
        5.0,
        "Position standard deviation of an unambiguous match, metres; alternatives widen it.",
        min=0.01,
        config="base_sigma_m",
    ),
    Parameter(
        "sequence_length", SequenceConfig.length,
        "Frames of the seqslam filter (temporal: seqslam).", min=1, max=1000,
        config="sequence.length",
    ),
    Parameter(
        "sequence_min_velocity",
        SequenceConfig.min_velocity,
        "Slowest travel the seqslam filter tries, in map places per camera "
        "frame (speed / (frame rate * map keyframe spacing)).",
        min=-100.0,
        max=100.0,
        config="sequence.min_velocity",
    ),
    Parameter(
        "sequence_max_velocity",
        SequenceConfig.max_velocity,
        "Fastest travel the seqslam filter tries, in map places per camera "
        "frame; at least sequence_min_velocity.",
        min=-100.0,
        max=100.0,
        config="sequence.max_velocity",
    ),
    Parameter(
        "max_image_pixels",
        50_000_000,
        "Larger images are rejected as bad input (logged, counted, skipped).",
        min=1,
    ),
    Parameter(
        "diagnostics_period_s", 1.0, "Period of /diagnostics, seconds.", min=0.1, max=3600.0
    ),
    Parameter(
        "log_throttle_s",
        5.0,
        "Minimum seconds between repeated warnings of the same kind.",
        min=0.0,
    ),
    Parameter(
        "verify_map",
        True,
        "Check every map file's sha256 when loading (a large map takes longer).",
    ),
    Parameter(
        "viz_max_places",
        20_000,
        "Most map places shown on vpr/map_places (every n-th place of larger maps); 0: none.",
        min=0,
    ),
    Parameter(
        "autostart",
        True,
        "Configure and activate the managed (lifecycle) node at start; false: wait in the"
        " unconfigured state for a lifecycle manager (or `ros2 lifecycle set`).",
    ),
)
BY_NAME = {p.name: p for p in PARAMETERS}
# the pipeline's options: LocalizerConfig's fields and the commands' pipeline flags
PIPELINE = tuple(p for p in PARAMETERS if p.config)


def defaults() -> dict[str, Value]:
    return {p.name: p.default for p in PARAMETERS}


def problems(values: dict[str, object]) -> list[str]:
    """Every reason ``values`` (a full set of parameter values) cannot run; empty when they can."""
    found = [
        msg
        for name, value in values.items()
        if name in BY_NAME and (msg := BY_NAME[name].problem(value))
    ]
    lo, hi = values.get("sequence_min_velocity"), values.get("sequence_max_velocity")
    if not found and lo is not None and hi is not None and lo > hi:
        found.append(f"sequence_min_velocity ({lo}) must not exceed sequence_max_velocity ({hi})")
    return found


def _yaml_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if value == "" else value
    return repr(value)


def render_yaml() -> str:
    """
    config/localize.yaml.

    Every parameter with its default, its description as the comment above it.
    """
    lines = [
        f"# Parameters of the {NODE_NAME} node (vpr_ros), with their defaults.",
        (
            "# Generated from vpr_ros/parameters.py: python -m vpr_ros.parameters >"
            " config/localize.yaml"
        ),
        f"{NODE_NAME}:",
        "  ros__parameters:",
    ]
    for p in PARAMETERS:
        allowed = f" Allowed: {', '.join(p.choices)}." if p.choices and p.name != "model" else ""
        lines += textwrap.wrap(
            p.description + allowed, width=100, initial_indent="    # ", subsequent_indent="    # "
        )
        lines.append(f"    {p.name}: {_yaml_value(p.default)}")
    return "\n".join(lines) + "\n"


def render_help() -> str:
    """Return what ``localize --help`` prints."""
    out = [
        "usage: localize [--ros-args --params-file FILE -p NAME:=VALUE ...]\n",
        (
            f"The {NODE_NAME} node: camera images in, vpr/match (vpr_ros/msg/PlaceMatch),"
            " vpr/pose_prior, /diagnostics and the visualization topics out; a managed"
            " (lifecycle) node."
        ),
        (
            "Subscribes `image` (or `image/compressed`); remap it to your camera topic with -r"
            " image:=/camera/image_raw."
        ),
        "Service ~/reload_map (std_srvs/Trigger) reloads map_path.\n",
        "parameters:",
    ]
    for p in PARAMETERS:
        allowed = f" {{{', '.join(p.choices)}}}" if p.choices else ""
        bounds = (
            f" [{_bound(p.min)}, {_bound(p.max)}]"
            if p.min is not None or p.max is not None
            else ""
        )
        out.append(
            f"  {p.name} ({p.type_name}, default {_yaml_value(p.default)}){allowed}{bounds}"
        )
        out += textwrap.wrap(
            p.description, width=96, initial_indent="      ", subsequent_indent="      "
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_yaml())
