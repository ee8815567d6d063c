"""The ROS-free pipeline: image -> descriptor -> search -> (re-rank) -> Match.

The node, the `vpr-ros localize` command and the demo all go through
``Localizer.localize``, so what is tested here is what runs on the robot.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from vpr_ros.index.sequence import SequenceConfig, SequenceMatcher
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.maps.mapdir import VprMap
from vpr_ros.stamps import ns_to_stamp_dict

SCHEMA = "vpr_ros/PlaceMatch/1"


@dataclass
class Candidate:
    place_id: int
    score: float  # cosine similarity of the global descriptors
    rerank_score: float | None
    position: list[float] | None  # map frame (UTM metres when the map came from GPS)
    orientation: list[float] | None  # quaternion x, y, z, w
    stamp_ns: int  # when the map image was taken
    source: str


@dataclass
class PosePrior:
    """What /vpr/pose_prior carries: the best place's pose and a 6x6 covariance (x, y, z, roll, pitch, yaw)."""

    position: list[float]
    orientation: list[float]  # quaternion x, y, z, w; identity when the map has no orientation
    covariance: list[float]  # 36 values, row-major


@dataclass
class Match:
    stamp_ns: int
    frame_id: str
    map_id: str
    model: str
    candidates: list[Candidate]
    confidence: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    covariance_xy: list[list[float]] | None = None  # 2x2, metres^2, see Localizer.pose_covariance
    pose_prior: PosePrior | None = None  # set when the match is confident enough to act on

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "stamp": ns_to_stamp_dict(self.stamp_ns),
            "frame_id": self.frame_id,
            "map_id": self.map_id,
            "model": self.model,
            "confidence": round(self.confidence, 4),
            "candidates": [
                {**asdict(c), "score": round(c.score, 6), "map_stamp": ns_to_stamp_dict(c.stamp_ns)}
                for c in self.candidates
            ],
            "covariance_xy": self.covariance_xy,
            "pose_prior": self.pose_prior is not None,
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


class Localizer:
    """Localizes single images against a map.

    Confidence is a ratio test on descriptor distances: 1 - d1/d_alt, where d1 is
    the best match's distance and d_alt that of the best candidate farther than
    ``ambiguity_radius_m`` from it (or the last candidate when all are close).
    The pose covariance grows with ambiguity: candidates that score almost as
    well but lie elsewhere spread it (see ``pose_covariance``).

    With ``sequence`` (length > 1) candidates are ranked by SeqSLAM-style path
    scores over the last frames (``rerank_score``) instead of by the single
    frame; that needs every place's similarity per frame, so it suits maps of
    up to a few tens of thousands of places.
    """

    def __init__(
        self,
        vpr_map: VprMap,
        extractor: DescriptorExtractor,
        top_k: int = 5,
        ambiguity_radius_m: float = 25.0,
        base_sigma_m: float = 5.0,
        sequence: SequenceConfig | None = None,
        min_confidence: float = 0.05,
    ):
        self.map = vpr_map
        self.extractor = extractor
        self.top_k = top_k
        self.ambiguity_radius_m = ambiguity_radius_m
        self.base_sigma_m = base_sigma_m
        self.min_confidence = min_confidence
        self.sequence = SequenceMatcher(len(vpr_map), sequence) if sequence and sequence.length > 1 else None
        self._positions = np.array([p.position or (math.nan,) * 3 for p in vpr_map.places], dtype=np.float64)

    def localize(self, rgb: np.ndarray, stamp_ns: int = 0, frame_id: str = "", latency_ms: dict | None = None) -> Match:
        latency = dict(latency_ms or {})
        t0 = time.perf_counter()
        descriptor = self.extractor.extract([rgb])
        t1 = time.perf_counter()
        match = self.match_descriptor(descriptor[0], stamp_ns, frame_id)
        latency["descriptor"] = (t1 - t0) * 1e3
        latency.update(match.latency_ms)
        latency["total"] = sum(latency.values())
        match.latency_ms = latency
        return match

    def match_descriptor(self, descriptor: np.ndarray, stamp_ns: int = 0, frame_id: str = "") -> Match:
        t0 = time.perf_counter()
        k = max(self.top_k, 2)
        if self.sequence is None:
            scores, ids = self.map.index.search(descriptor[None], k)
            scores, ids = scores[0], ids[0]
            keep = ids >= 0
            scores, ids, path_scores = scores[keep], ids[keep], [None] * int(keep.sum())
        else:
            similarity = np.asarray(self.map.descriptors) @ descriptor
            ids, path_scores = self.sequence.push(similarity, k)
            scores = similarity[ids]
        t1 = time.perf_counter()
        candidates = [self._candidate(int(i), float(s), None if r is None else float(r))
                      for i, s, r in zip(ids[: self.top_k], scores[: self.top_k], path_scores[: self.top_k])]
        confidence = self.confidence(scores, ids)
        covariance_xy = self.pose_covariance(scores, ids)
        return Match(
            stamp_ns=stamp_ns,
            frame_id=frame_id,
            map_id=self.map.map_id,
            model=self.extractor.spec.name,
            candidates=candidates,
            confidence=confidence,
            latency_ms={"search": (t1 - t0) * 1e3},
            covariance_xy=covariance_xy,
            pose_prior=self.pose_prior(candidates[0], confidence, covariance_xy) if candidates else None,
        )

    def _candidate(self, i: int, score: float, rerank_score: float | None) -> Candidate:
        p = self.map.places[i]
        return Candidate(
            place_id=p.place_id,
            score=score,
            rerank_score=rerank_score,
            position=list(p.position) if p.position else None,
            orientation=list(p.orientation) if p.orientation else None,
            stamp_ns=p.stamp_ns,
            source=p.source,
        )

    @staticmethod
    def _distances(scores: np.ndarray) -> np.ndarray:
        # For unit vectors ||a - b|| = sqrt(2 - 2 cos).
        return np.sqrt(np.clip(2.0 - 2.0 * scores.astype(np.float64), 1e-12, None))

    def confidence(self, scores: np.ndarray, ids: np.ndarray) -> float:
        if len(scores) < 2:
            return 0.0
        d = self._distances(scores)
        far = self._far_from_best(ids)
        alt = d[far][0] if far.any() else d[-1]
        return float(np.clip(1.0 - d[0] / alt, 0.0, 1.0))

    def _far_from_best(self, ids: np.ndarray) -> np.ndarray:
        pos = self._positions[ids, :2]
        if np.isnan(pos[0]).any():
            return np.arange(len(ids)) > 0  # no positions: every other candidate is an alternative
        dist = np.linalg.norm(pos - pos[0], axis=1)
        return np.nan_to_num(dist, nan=np.inf) > self.ambiguity_radius_m

    def pose_covariance(self, scores: np.ndarray, ids: np.ndarray) -> list[list[float]] | None:
        """2x2 xy covariance around the best place: base_sigma^2 I plus the spread of weighted alternatives.

        Weights are (d1/di)^8: a candidate 10 % farther in descriptor space counts
        about half, 25 % farther about a sixth.
        """
        pos = self._positions[ids, :2]
        if len(ids) == 0 or np.isnan(pos[0]).any():
            return None
        d = self._distances(scores)
        w = (d[0] / d) ** 8
        w[np.isnan(pos).any(axis=1)] = 0.0
        offsets = np.nan_to_num(pos - pos[0])
        spread = (w[:, None, None] * offsets[:, :, None] * offsets[:, None, :]).sum(0) / w.sum()
        cov = spread + np.eye(2) * self.base_sigma_m**2
        return cov.round(4).tolist()

    def pose_prior(self, best: Candidate, confidence: float, covariance_xy: list[list[float]] | None) -> PosePrior | None:
        """The best place's pose with a 6x6 covariance, or None below ``min_confidence`` or without a position."""
        if confidence < self.min_confidence or covariance_xy is None or best.position is None:
            return None
        cov = [0.0] * 36  # row-major x, y, z, roll, pitch, yaw
        (cov[0], cov[1]), (cov[6], cov[7]) = covariance_xy
        cov[14] = 4.0 * self.base_sigma_m**2  # height is weakly observed by place recognition
        cov[21] = cov[28] = 0.1  # roll, pitch: ~18 deg
        # The map image's heading is roughly the camera's; unknown when the map had no orientation.
        cov[35] = 0.35**2 if best.orientation else math.pi**2
        return PosePrior(list(best.position), list(best.orientation or (0.0, 0.0, 0.0, 1.0)), cov)
