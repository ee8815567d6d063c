"""
Replay conditions: what a robot does that a recorded route in order never shows.

Every data set is replayed in order, reversed, in shuffled chunks of 10 and 25 frames (a carried
robot, gaps in a bag), at double speed (every other frame), with stops (frames repeated), and off
the map (a map of its first half, every query). Each row scores the pipeline's answers
(``Localizer.match``, as the node runs it) against the plain retrieval on the same map, and the
pose priors: their precision, their share of the on-map frames, how many frames farther than
three thresholds from every map place got one, and the frames from each jump to the first right
prior.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vpr_ros.evaluation.calibration import expected_calibration_error, plot_reliability
from vpr_ros.localizer import Localizer
from vpr_ros.fileio import atomic_directory
from vpr_ros.maps.local_features import copy_first_places
from vpr_ros.maps.mapdir import VprMap, load_map, write_map_into
from vpr_ros.search.faiss_index import IndexConfig

CHUNKS = (10, 25)
STOP_EVERY, STOP_FRAMES = 20, 8  # every 20th frame is held for 8 more frames
JUMP_FRAMES = 3  # consecutive replayed frames farther apart than this (in query order) jump


@dataclass(frozen=True)
class Condition:
    name: str
    order: np.ndarray  # query indices in replay order
    map_places: int | None = None  # the map's first places only (None: all of it)

    @property
    def jumps(self) -> list[int]:
        """Positions in ``order`` where the replay lands somewhere else."""
        step = np.abs(np.diff(self.order))
        return (np.nonzero(step > JUMP_FRAMES)[0] + 1).tolist()


def conditions(queries: int, places: int, seed: int = 0) -> list[Condition]:
    """Return the replays of one data set: ``queries`` frames in driving order, ``places``."""
    rng = np.random.default_rng(seed)
    in_order = np.arange(queries)
    out = [Condition("in order", in_order), Condition("reversed", in_order[::-1])]
    for size in CHUNKS:
        chunks = [in_order[i:i + size] for i in range(0, queries, size)]
        out.append(Condition(
            f"chunks of {size}, shuffled",
            np.concatenate([chunks[i] for i in rng.permutation(len(chunks))]),
        ))
    out.append(Condition("double speed", in_order[::2]))
    stops = np.concatenate(
        [[i] * (1 + STOP_FRAMES * (i % STOP_EVERY == STOP_EVERY - 1)) for i in in_order]
    )
    out.append(Condition("stops", stops.astype(np.int64)))
    out.append(Condition("off the map", in_order, max(places // 2, 1)))
    return out


@dataclass
class ConditionRow:
    name: str
    frames: int
    recall_at_1: float  # on frames with a right place in the map
    plain_recall_at_1: float  # the retrieval's top-1 on the same frames
    prior_precision: float  # share of pose priors that were right (NaN without priors)
    prior_fraction: float  # pose priors per on-map frame
    off_map_frames: int  # frames farther than three thresholds from every map place
    off_map_prior_rate: float  # pose priors per such frame (NaN without such frames)
    frames_to_recover: list[int | None] = field(default_factory=list)  # per jump; None: never

    def summary(self) -> dict:
        recovered = [f for f in self.frames_to_recover if f is not None]
        return {
            "condition": self.name,
            "frames": self.frames,
            "recall_at_1": round(self.recall_at_1, 3),
            "plain_recall_at_1": round(self.plain_recall_at_1, 3),
            "prior_precision": _round(self.prior_precision),
            "prior_fraction": round(self.prior_fraction, 3),
            "off_map_frames": self.off_map_frames,
            "off_map_prior_rate": _round(self.off_map_prior_rate),
            "jumps": len(self.frames_to_recover),
            "frames_to_recover_max": max(recovered) if recovered else None,
            "jumps_never_recovered": len(self.frames_to_recover) - len(recovered),
        }


def _round(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 4)


@dataclass
class Frames:
    """Per replayed frame, for rows and for calibration."""

    right: np.ndarray  # the answer's best place is right
    plain_right: np.ndarray
    on_map: np.ndarray  # a right place exists in the map
    far: np.ndarray  # farther than three thresholds from every map place
    prior: np.ndarray  # a pose prior was given
    confidence: np.ndarray
    on_map_probability: np.ndarray
    confidence_features: list[dict[str, float]]  # what each confidence was computed from


def score(condition: Condition, frames: Frames) -> ConditionRow:
    on = frames.on_map
    prior = frames.prior
    right_prior = prior & frames.right
    recover: list[int | None] = []
    jumps = condition.jumps
    for j, start in enumerate(jumps):
        end = jumps[j + 1] if j + 1 < len(jumps) else len(prior)
        hits = np.nonzero(right_prior[start:end])[0]
        recover.append(int(hits[0]) + 1 if len(hits) else None)
    return ConditionRow(
        condition.name,
        len(prior),
        float(frames.right[on].mean()) if on.any() else math.nan,
        float(frames.plain_right[on].mean()) if on.any() else math.nan,
        float(right_prior.sum() / prior.sum()) if prior.any() else math.nan,
        float(prior[on].mean()) if on.any() else math.nan,
        int(frames.far.sum()),
        float(prior[frames.far].mean()) if frames.far.any() else math.nan,
        recover,
    )


def prefix_map(vpr_map: VprMap, places: int, work: Path) -> VprMap:
    """
    Write the map's first ``places`` places as a map of their own (exact search, same model).

    With their local features where the map holds some: the re-ranker runs off the map too.
    """
    target = work / f"first_{places}"
    with atomic_directory(target) as tmp:
        write_map_into(
            tmp,
            target,
            np.asarray(vpr_map.descriptors[:places]),
            [vpr_map.places[i] for i in range(places)],
            vpr_map.model,
            IndexConfig("flat", pca_dim=None),
            [{"source": f"the first {places} places of map {vpr_map.map_id}"}],
            extra_files=copy_first_places(vpr_map.path, places, tmp),
        )
    return load_map(target)


def replay(
    localizer: Localizer,
    condition: Condition,
    descriptors: np.ndarray,
    positives: list[np.ndarray],
    far_positives: list[np.ndarray],
    local: list | None = None,
    travelled_m: np.ndarray | None = None,
) -> Frames:
    """
    Run ``condition`` through ``localizer`` frame by frame; ground truth in full-map indices.

    ``far_positives``: map places within three thresholds of each query. Odometry (``travelled_m``,
    per query in driving order) is given only to replays that drive the route in order.
    """
    n = len(localizer.map)
    index_of = {int(p): i for i, p in enumerate(localizer.map.places.place_ids)}
    order = condition.order
    pos = [p[p < n] for p in positives]
    far = np.array([not np.any(far_positives[i] < n) for i in order])
    _, plain = localizer.map.index.search(np.ascontiguousarray(descriptors[order]), 1)
    use_odometry = travelled_m is not None and condition.name in ("in order", "off the map")
    frames = {k: np.zeros(len(order), bool) for k in ("right", "plain_right", "prior")}
    confidence, on_map = np.zeros(len(order)), np.full(len(order), np.nan)
    features = []
    localizer.reset()
    for q, i in enumerate(order):
        m = localizer.match(
            descriptors[i],
            None if local is None else local[i],
            travelled_m=float(travelled_m[i]) if use_odometry else None,
        )
        best = index_of[m.candidates[0].place_id] if m.candidates else -1
        frames["right"][q] = best in pos[i]
        frames["plain_right"][q] = plain[q, 0] in pos[i]
        # maps without positions (image folders) give no pose; the decision is the same
        frames["prior"][q] = m.actionable
        confidence[q] = m.confidence
        on_map[q] = np.nan if m.on_map is None else m.on_map
        features.append(m.confidence_features)
    return Frames(
        frames["right"],
        frames["plain_right"],
        np.array([len(pos[i]) > 0 for i in order]),
        far,
        frames["prior"],
        confidence,
        on_map,
        features,
    )


def run_conditions(
    vpr_map: VprMap,
    make_localizer: Callable[[VprMap], Localizer],
    descriptors: np.ndarray,
    positives: list[np.ndarray],
    far_positives: list[np.ndarray],
    work: Path,
    local: list | None = None,
    travelled_m: np.ndarray | None = None,
    seed: int = 0,
) -> list[tuple[ConditionRow, Frames]]:
    """Every condition of ``conditions`` on one data set."""
    out = []
    full = make_localizer(vpr_map)
    for c in conditions(len(descriptors), len(vpr_map), seed):
        localizer = full if c.map_places is None else make_localizer(
            prefix_map(vpr_map, c.map_places, work)
        )
        frames = replay(
            localizer, c, descriptors, positives, far_positives,
            local, travelled_m,
        )
        out.append((score(c, frames), frames))
    return out


COLUMNS = ("condition", "frames", "recall_at_1", "plain_recall_at_1", "prior_precision",
           "prior_fraction", "off_map_frames", "off_map_prior_rate", "jumps",
           "frames_to_recover_max", "jumps_never_recovered")


def markdown_table(rows: list[dict]) -> str:
    """Format the rows (``ConditionRow.summary``) as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in COLUMNS) + " |"
              for r in rows]
    return "\n".join(lines)


def write_report(results: list[tuple[ConditionRow, Frames]], out: Path, title: str) -> dict:
    """
    Write ``conditions.json`` and ``reliability.png`` (every condition's frames) into ``out``.

    Returns the report: the rows and the expected calibration error of ``confidence``.
    """
    out.mkdir(parents=True, exist_ok=True)
    confidence = np.concatenate([f.confidence for _, f in results])
    right = np.concatenate([f.right for _, f in results])
    report = {
        "rows": [row.summary() for row, _ in results],
        "expected_calibration_error": round(expected_calibration_error(confidence, right), 4),
    }
    plot_reliability(confidence, right, out / "reliability.png", title)
    (out / "conditions.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
