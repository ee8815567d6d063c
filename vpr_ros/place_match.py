"""
A Match in the fields of msg/PlaceMatch.msg: one content for the topic and the JSON lines.

The node fills the typed vpr_ros/msg/PlaceMatch from ``place_match_fields`` (vpr_ros.ros.messages)
and ``vpr-ros localize`` writes the same dict as one JSON document per line, so both carry the
same fields, named and nested as in the message. A number the message cannot leave empty is NaN
in the dict (null in JSON); a missing pose is a zero pose with ``has_position`` false. No ROS
import here: the command runs without ROS.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from vpr_ros.stamps import ns_to_stamp_dict

if TYPE_CHECKING:
    from vpr_ros.localizer import Candidate, Match, StageLatency, TemporalState

NAN = float("nan")
# msg/TemporalState.msg and msg/StageLatency.msg (vpr_ros.localizer's dataclasses), in their order
TEMPORAL_FIELDS = ("filter", "reset", "applied", "evidence", "agreement", "support")
LATENCY_STAGES = (
    "age_at_receipt", "take", "queue", "decode", "descriptor", "search", "rerank", "temporal",
    "total",
)


def place_match_fields(match: Match) -> dict:
    """Return the PlaceMatch message's fields for ``match``, as nested dicts and lists."""
    return {
        "header": {"stamp": ns_to_stamp_dict(match.stamp_ns), "frame_id": match.frame_id},
        "map_id": match.map_id,
        "model": match.model,
        "candidates": [_candidate(c) for c in match.candidates],
        "confidence": float(match.confidence),
        "on_map": _number(match.on_map),
        "pose_prior": match.pose_prior is not None,
        "covariance_xy": [float(v) for row in match.covariance_xy or () for v in row],
        "rerank": match.rerank or "",
        "temporal": _temporal(match.temporal),
        "latency_ms": _latency(match.latency_ms),
    }


def place_match_json(match: Match) -> str:
    """One JSON document (one line): ``place_match_fields`` with NaN written as null."""
    return json_line(place_match_fields(match))


def json_line(fields: dict) -> str:
    """Return PlaceMatch fields (of a Match, or of a received message) as one line of JSON."""
    return json.dumps(_nulls(fields), separators=(",", ":"), allow_nan=False)


def _candidate(c: Candidate) -> dict:
    position = c.position or (0.0, 0.0, 0.0)
    orientation = c.orientation or (0.0, 0.0, 0.0, 1.0)
    return {
        "place_id": int(c.place_id),
        "score": float(c.score),
        "rerank_score": _number(c.rerank_score),
        "temporal_score": _number(c.temporal_score),
        "has_position": c.position is not None,
        "has_orientation": c.orientation is not None,
        "pose": {
            "position": dict(zip("xyz", map(float, position))),
            "orientation": dict(zip("xyzw", map(float, orientation))),
        },
        "map_stamp": ns_to_stamp_dict(c.stamp_ns),
        "source": c.source,
    }


def _temporal(state: TemporalState | None) -> dict:
    """Return the TemporalState message's fields (without a filter: none ran, nothing applied)."""
    if state is None:
        return {"filter": "", "reset": False, "applied": False,
                **{k: NAN for k in TEMPORAL_FIELDS[3:]}}
    return {"filter": state.filter, "reset": state.reset, "applied": state.applied,
            **{k: _number(getattr(state, k)) for k in TEMPORAL_FIELDS[3:]}}


def _latency(latency: StageLatency) -> dict:
    return {stage: _number(getattr(latency, stage)) for stage in LATENCY_STAGES}


def _number(value: float | None) -> float:
    return NAN if value is None else float(value)


def _nulls(value):
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulls(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
