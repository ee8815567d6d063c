"""
Poses for map places.

NavSatFix -> UTM, Odometry/PoseStamped -> pose, time interpolation, keyframes.

Messages are read by field name, so rclpy objects and rosbags-deserialised objects both work.
Positions are in metres: UTM (easting, northing, altitude) for GPS, the odometry frame otherwise.
Yaw follows REP-103 (ENU: 0 = east, counter-clockwise); quaternions are (x, y, z, w).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import utm

from vpr_ros.stamps import stamp_to_ns

NAVSAT_STATUS_NO_FIX = -1
DEFAULT_MAX_GAP_S = 1.0
DEFAULT_MIN_MOTION_M = 2.0
# A header stamp this far from the bag's recording time is a clock jump or an unsynchronised clock
# (GPS time is 18 s off UTC, device clocks count from boot): the recording time is used instead, so
# such a stamp cannot pair an image with another moment's pose.
DEFAULT_MAX_STAMP_SKEW_S = 5.0
# UTM is defined from 80 S to 84 N; beyond that utm raises OutOfRangeError (polar regions use UPS).
UTM_LATITUDE_RANGE = (-80.0, 84.0)


@dataclass(frozen=True)
class UtmZone:
    number: int
    letter: str

    def __str__(self) -> str:
        return f"{self.number}{self.letter}"


class UtmProjector:
    """
    Project lat/lon -> UTM metres in ONE zone for a whole route (the first fix's).

    A route that crosses a zone border so stays one continuous metric frame instead of
    jumping by ~600 km.
    """

    def __init__(self, zone: UtmZone | None = None) -> None:
        self.zone = zone

    def project(self, lat: float, lon: float) -> tuple[float, float]:
        if self.zone is None:
            _, _, number, letter = utm.from_latlon(lat, lon)
            self.zone = UtmZone(int(number), str(letter))
        easting, northing, _, _ = utm.from_latlon(
            lat, lon, force_zone_number=self.zone.number, force_zone_letter=self.zone.letter
        )
        return float(easting), float(northing)


def header_stamp_ns(msg: Any, fallback_ns: int, max_skew_s: float | None = None) -> int:
    """
    Return the message's header stamp in ns.

    `fallback_ns` (e.g. the bag's receive time) when the driver left it 0, or, with `max_skew_s`,
    when it is further than that from `fallback_ns` (a clock jump or an unsynchronised clock).
    """
    ns = stamp_to_ns(msg.header.stamp)
    if ns <= 0 or (max_skew_s is not None and abs(ns - int(fallback_ns)) > max_skew_s * 1e9):
        return int(fallback_ns)
    return ns


def fix_problem(msg: Any) -> str | None:
    """
    Why a NavSatFix gives no usable position (a short reason for counting).

    None when it does.
    """
    if int(msg.status.status) <= NAVSAT_STATUS_NO_FIX:
        return "no fix (status -1)"
    lat, lon = float(msg.latitude), float(msg.longitude)
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return "NaN or infinite coordinates"
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return "latitude/longitude out of range"
    if not UTM_LATITUDE_RANGE[0] <= lat <= UTM_LATITUDE_RANGE[1]:
        return "outside UTM (latitude beyond 84 N / 80 S)"
    if lat == 0.0 and lon == 0.0:  # what many drivers publish before their first fix
        return "(0, 0) placeholder"
    return None


def pose_from_msg(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """nav_msgs/Odometry, geometry_msgs/PoseStamped or PoseWithCovarianceStamped -> (xyz, xyzw)."""
    pose = msg.pose
    if hasattr(pose, "pose"):  # Odometry and PoseWithCovarianceStamped wrap a PoseWithCovariance
        pose = pose.pose
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z], np.float64), np.array([q.x, q.y, q.z, q.w], np.float64)


def yaw_to_quaternion(yaw: np.ndarray) -> np.ndarray:
    """Yaw angles [N] (radians) -> quaternions [N, 4] (x, y, z, w) about +z."""
    yaw = np.asarray(yaw, np.float64)
    zeros = np.zeros_like(yaw)
    return np.stack([zeros, zeros, np.sin(yaw / 2), np.cos(yaw / 2)], axis=-1)


def slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation of quaternions [N, 4] at fractions t [N], shortest path."""
    dot = np.sum(q0 * q1, axis=-1)
    q1 = np.where(dot[:, None] < 0, -q1, q1)  # q and -q are the same rotation: take the short arc
    theta = np.arccos(np.clip(np.abs(dot), 0.0, 1.0))
    sin_theta = np.sin(theta)
    nearly_equal = sin_theta < 1e-9
    safe_sin = np.where(nearly_equal, 1.0, sin_theta)
    w0 = np.where(nearly_equal, 1 - t, np.sin((1 - t) * theta) / safe_sin)
    w1 = np.where(nearly_equal, t, np.sin(t * theta) / safe_sin)
    q = w0[:, None] * q0 + w1[:, None] * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


@dataclass(frozen=True)
class TrackSamples:
    """A PoseTrack sampled at given stamps; rows where `valid` is False have no pose (NaN)."""

    valid: np.ndarray  # [M] bool
    positions: np.ndarray  # [M, 3]
    orientations: np.ndarray | None  # [M, 4]
    latlons: np.ndarray | None  # [M, 2]


@dataclass(frozen=True)
class PoseTrack:
    """Time-sorted poses of one recording. `utm_zone` is set when positions are UTM from GPS."""

    stamps_ns: np.ndarray  # [N] int64, strictly increasing
    positions: np.ndarray  # [N, 3]
    orientations: np.ndarray | None = None  # [N, 4]
    latlons: np.ndarray | None = None  # [N, 2]
    utm_zone: str | None = None

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def interpolate(
        self, stamps_ns: Sequence[int] | np.ndarray, max_gap_s: float = DEFAULT_MAX_GAP_S
    ) -> TrackSamples:
        """
        Linear position (and lat/lon), slerp orientation.

        A stamp whose nearest track sample is more than `max_gap_s` away (before/after the track,
        or inside a GPS dropout) gets no pose rather than an extrapolated guess.
        """
        t = np.asarray(stamps_ns, np.int64)
        if len(self) == 0:
            nan3 = np.full((len(t), 3), np.nan)
            return TrackSamples(np.zeros(len(t), bool), nan3, None, None)
        last = len(self) - 1
        after = np.searchsorted(self.stamps_ns, t, side="right")
        i0, i1 = np.clip(after - 1, 0, last), np.clip(after, 0, last)
        s0, s1 = self.stamps_ns[i0], self.stamps_ns[i1]
        span = (s1 - s0).astype(np.float64)
        w = np.clip(
            np.divide((t - s0).astype(np.float64), span, out=np.zeros(len(t)), where=span > 0),
            0.0,
            1.0,
        )
        nearest_gap_ns = np.minimum(np.abs(t - s0), np.abs(t - s1))
        valid = nearest_gap_ns <= max_gap_s * 1e9

        def lerp(values: np.ndarray) -> np.ndarray:
            out = values[i0] + w[:, None] * (values[i1] - values[i0])
            out[~valid] = np.nan
            return out

        orientations = None
        if self.orientations is not None:
            orientations = slerp(self.orientations[i0], self.orientations[i1], w)
            orientations[~valid] = np.nan
        latlons = lerp(self.latlons) if self.latlons is not None else None
        return TrackSamples(valid, lerp(self.positions), orientations, latlons)

    def with_heading_from_motion(self, min_motion_m: float = DEFAULT_MIN_MOTION_M) -> PoseTrack:
        """
        Orientation as yaw along the direction of travel, for GPS which gives none.

        Each sample looks ahead to the first sample at least `min_motion_m` further along the
        path (so GPS jitter while crawling does not spin the heading); samples near the end,
        with nothing far enough ahead, keep the last heading. A track that never moves that far
        gets no orientation.
        """
        xy = self.positions[:, :2]
        if len(self) < 2:
            return self
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
        ahead = np.searchsorted(arc, arc + min_motion_m, side="left")
        has_ahead = ahead < len(self)
        if not has_ahead.any():
            return PoseTrack(self.stamps_ns, self.positions, None, self.latlons, self.utm_zone)
        # Forward-fill the tail: samples without a far-enough successor use the last defined
        # heading.
        ahead = np.where(has_ahead, ahead, ahead[has_ahead][-1])
        source = np.where(has_ahead, np.arange(len(self)), np.flatnonzero(has_ahead)[-1])
        delta = xy[ahead] - xy[source]
        yaw = np.arctan2(delta[:, 1], delta[:, 0])
        return PoseTrack(
            self.stamps_ns, self.positions, yaw_to_quaternion(yaw), self.latlons, self.utm_zone
        )


class PoseTrackBuilder:
    """
    Collects pose messages of one recording (any supported type) and builds a PoseTrack.

    NavSatFix: impossible fixes (fix_problem) are skipped; positions are UTM in the first fix's
    zone, altitude as z, and heading comes from motion.
    Odometry/PoseStamped/PoseWithCovarianceStamped: the message's own position and orientation, in
    its frame. Pass a shared `projector` to keep several recordings in one UTM zone. `skipped`
    counts refused messages by reason.
    """

    def __init__(self, projector: UtmProjector | None = None) -> None:
        self._projector = projector or UtmProjector()
        self._stamps: list[int] = []
        self._positions: list[np.ndarray] = []
        self._orientations: list[np.ndarray] = []
        self._latlons: list[tuple[float, float]] = []
        self.skipped: Counter[str] = Counter()

    def add(self, stamp_ns: int, msg: Any) -> bool:
        """
        Add one message.

        Returns False (and counts its reason) when it carries no usable pose.
        """
        if hasattr(msg, "latitude"):
            problem = fix_problem(msg)
            if problem is None:
                easting, northing = self._projector.project(msg.latitude, msg.longitude)
                altitude = msg.altitude if math.isfinite(msg.altitude) else 0.0
                self._positions.append(np.array([easting, northing, altitude]))
                self._latlons.append((float(msg.latitude), float(msg.longitude)))
        else:
            position, orientation = pose_from_msg(msg)
            finite = np.isfinite(position).all() and np.isfinite(orientation).all()
            problem = None if finite else "NaN or infinite pose"
            if problem is None:
                norm = float(np.linalg.norm(orientation))
                self._positions.append(position)
                # A zero quaternion (position-only publishers) keeps the position, with orientation
                # unknown.
                self._orientations.append(
                    orientation / norm if norm > 1e-6 else np.full(4, np.nan)
                )
        if problem is not None:
            self.skipped[problem] += 1
            return False
        self._stamps.append(int(stamp_ns))
        return True

    def build(self) -> PoseTrack:
        stamps = np.asarray(self._stamps, np.int64)
        # Sort by stamp and keep the first of duplicate stamps, so interpolation spans are > 0.
        order = np.argsort(stamps, kind="stable")
        order = (
            order[np.concatenate([[True], np.diff(stamps[order]) > 0])] if len(order) else order
        )
        if len(order) < len(stamps):
            self.skipped["duplicate stamp"] += len(stamps) - len(order)
        positions = np.asarray(self._positions, np.float64).reshape(-1, 3)[order]
        if self._latlons:
            latlons = np.asarray(self._latlons, np.float64)[order]
            track = PoseTrack(stamps[order], positions, None, latlons, str(self._projector.zone))
            return track.with_heading_from_motion()
        orientations = np.asarray(self._orientations, np.float64).reshape(-1, 4)[order]
        return PoseTrack(stamps[order], positions, orientations if len(order) else None)


class KeyframeSelector:
    """
    Online keyframe choice while streaming frames.

    A frame with a position is kept when it is at least `min_distance_m` (horizontal: GPS
    altitude noise would otherwise add keyframes while standing still) from the last kept
    one. A frame without a position, or every frame when `min_distance_m` is 0, is kept
    every `every_n`-th time.
    """

    def __init__(self, min_distance_m: float = 0.0, every_n: int = 1) -> None:
        if min_distance_m < 0 or every_n < 1:
            raise ValueError(
                f"need min_distance_m >= 0 and every_n >= 1, got {min_distance_m}, {every_n}"
            )
        self.min_distance_m = float(min_distance_m)
        self.every_n = int(every_n)
        self._last_kept_xy: np.ndarray | None = None
        self._counted = 0
        self._before_last = (self._last_kept_xy, self._counted)

    def keep(self, position: np.ndarray | None) -> bool:
        self._before_last = (self._last_kept_xy, self._counted)
        has_position = position is not None and bool(np.isfinite(position).all())
        if has_position and self.min_distance_m > 0:
            xy = np.asarray(position, np.float64)[:2]
            if (
                self._last_kept_xy is not None
                and np.linalg.norm(xy - self._last_kept_xy) < self.min_distance_m
            ):
                return False
            self._last_kept_xy = xy
            return True
        self._counted += 1
        return (self._counted - 1) % self.every_n == 0

    def forget_last(self) -> None:
        """
        Undo the last keep().

        Its frame turned out unreadable, so the next frame may take its place.
        """
        self._last_kept_xy, self._counted = self._before_last
