"""
Is the frame from this map at all? The "not on this map" hypothesis.

A frame from outside the map still has a best place, and its margin over the next one can be as
wide as a right match's: the confidence model, which compares candidates with each other, cannot
tell. What can is how the best similarity compares with what this map's own places score against
genuinely different places of the same map (FAB-MAP's new-place probability and RTAB-Map's
virtual place ask the same). ``NullSimilarity`` is that distribution, computed when the map is
written and stored in its manifest, so it follows each model and map; ``novelty`` places a
frame's best similarity in it on a scale-free axis.

``OnMapModel`` turns a frame's evidence into a likelihood ratio (on the map : off it): a logistic
regression over ``novelty`` (and the verified inliers where the map holds local features),
divided by the odds of its training set so that it is a ratio, not a posterior. ``OnMapFilter``
is a two-state Bayes filter over frames (on, off) with a small switching probability, fed by that
ratio and by the temporal filter's own Bayes factor for its track (a track that predicts this
frame's candidates is evidence that the frame is on the map; off the map the candidates do not
follow the track). Its probability is ``Match.on_map``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

FEATURES = ("novelty", "peak")
NULL_QUANTILES = 33  # stored quantiles of the null: 0, 1/32, ... 1
NULL_SAMPLES = 1000  # map places whose best "elsewhere" similarity makes the null
NULL_NEIGHBOURS = 128  # search depth per sampled place (its own neighbours come first)
# "genuinely different": farther than this from the sampled place (three 25 m thresholds would
# leave few places in a small map), or this many places away in map order without positions
NULL_RADIUS_M = 25.0
NULL_RADIUS_PLACES = 5


@dataclass(frozen=True)
class NullSimilarity:
    """Quantiles (ascending) of the best similarity of a map place to places elsewhere."""

    quantiles: tuple[float, ...]

    def __post_init__(self):
        q = np.asarray(self.quantiles, dtype=np.float64)
        if len(q) < 3 or not np.isfinite(q).all() or np.any(np.diff(q) < 0):
            raise ValueError("null similarity quantiles must be >= 3 finite ascending values")

    def novelty(self, best_score: float) -> float:
        """
        Where ``best_score`` lies in the null: (score - median) / (q90 - q10).

        0 is a typical score against a place elsewhere; a right match lies well above. Scale-free,
        so one model serves every descriptor and map.
        """
        median, spread = self._scale
        return (best_score - median) / spread

    @functools.cached_property
    def _scale(self) -> tuple[float, float]:
        """Median and q90 - q10 of the null, once per map rather than per frame."""
        q = np.asarray(self.quantiles)
        median, lo, hi = np.interp([0.5, 0.1, 0.9], np.linspace(0, 1, len(q)), q)
        return float(median), max(float(hi - lo), 1e-6)

    def to_manifest(self) -> list[float]:
        return [round(float(v), 6) for v in self.quantiles]


def peak(scores: np.ndarray) -> float:
    """
    How far the best similarity stands out of the frame's own candidates (best first).

    (best - mean) / std over them: a frame from elsewhere has no place that stands out, whatever
    the lighting does to every similarity.
    """
    s = np.asarray(scores, dtype=np.float64)
    spread = s.std()
    return float((s[0] - s.mean()) / spread) if len(s) > 2 and spread > 1e-9 else 0.0


def compute_null(search, descriptors: np.ndarray, positions_xy: np.ndarray | None,
                 seed: int = 0) -> NullSimilarity | None:
    """
    Compute a map's null: ``search(queries, k) -> (scores, ids)`` is its index's search.

    None for a map too small to have places elsewhere.
    """
    n = len(descriptors)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(n, NULL_SAMPLES), replace=False))
    scores, ids = search(np.ascontiguousarray(descriptors[sample], dtype=np.float32),
                         min(n, NULL_NEIGHBOURS))
    has_xy = positions_xy is not None and np.isfinite(positions_xy).all()
    best = []
    for row, (s, i) in enumerate(zip(scores, ids)):
        keep = i >= 0
        s, i = s[keep], i[keep]
        if has_xy:
            far = np.linalg.norm(positions_xy[i] - positions_xy[sample[row]], axis=1)
            elsewhere = far > NULL_RADIUS_M
        else:
            # a handful of places (a short sample) keeps a null with a closer exclusion
            elsewhere = np.abs(i - sample[row]) > min(NULL_RADIUS_PLACES, n // 4)
        if elsewhere.any():
            best.append(float(s[elsewhere][0]))  # search order: best first
    if len(best) < 3:
        return None
    return NullSimilarity(tuple(np.quantile(best, np.linspace(0, 1, NULL_QUANTILES)).tolist()))


@dataclass(frozen=True)
class OnMapModel:
    """
    P(on the map | one frame) = sigmoid(bias + weights . features), fitted with ``base_rate``.

    ``likelihood_ratio`` divides the fitted odds by the training odds.
    """

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    base_rate: float  # share of on-map frames in the training set

    def likelihood_ratio(self, **values: float) -> float:
        z = self.bias + sum(w * float(values[f]) for f, w in zip(self.features, self.weights))
        z -= math.log(self.base_rate / (1.0 - self.base_rate))
        return math.exp(min(max(z, -30.0), 30.0))


@dataclass(frozen=True)
class OnMapFilterConfig:
    """
    switch: per-frame probability of moving between on and off the map.

    track_miss: evidence of a frame whose retrieval missed the trusted track's place.
    """

    switch: float = 0.02
    # likelihood ratio (on : off) of a frame whose retrieval did not see the trusted track's
    # place: on the map the retrieval sees it on about half the frames (R@10 of the weakest sets),
    # off it almost never
    track_miss: float = 0.5


class OnMapFilter:
    """Two-state (on / off the map) Bayes filter over frames; starts undecided."""

    def __init__(self, model: OnMapModel, config: OnMapFilterConfig = OnMapFilterConfig()):
        self.model = model
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.p_on = 0.5

    def push(self, track_bayes_factor: float = 1.0, frames: float = 1.0, left_route: float = 0.0,
             track_missed: bool = False, **features: float) -> float:
        """
        One frame's evidence; returns P(on the map).

        ``track_bayes_factor``: the temporal filter's p(candidates | its track) / p(candidates |
        any place alike), 1 without a filter; ``frames``: camera frames since the last push;
        ``left_route``: the share of the track that drove past the route's ends; ``track_missed``:
        this frame's retrieval did not see the trusted track's place.
        """
        stay = (1.0 - self.config.switch) ** frames
        on = self.p_on * (1.0 - left_route)
        prior = on * stay + (1.0 - on) * (1.0 - stay)
        ratio = self.model.likelihood_ratio(**features) * max(track_bayes_factor, 1.0)
        if track_missed:
            ratio *= self.config.track_miss
        odds = prior / max(1.0 - prior, 1e-12) * ratio
        self.p_on = float(min(max(odds / (1.0 + odds), 1e-6), 1 - 1e-6))
        return self.p_on


def fit_on_map(tables: list[dict[str, np.ndarray]]) -> OnMapModel:
    """
    Fit on frames of several data sets: ``novelty``, ``on`` (a right place in the map) and ``far``.

    Frames neither on nor far (near the map's end, within three thresholds) are left out.
    """
    from vpr_ros.confidence import fit_confidence

    used = [t["on"] | t["far"] for t in tables]
    table = {f: np.concatenate([t[f][u] for t, u in zip(tables, used)]) for f in FEATURES}
    on = np.concatenate([t["on"][u] for t, u in zip(tables, used)])
    fitted = fit_confidence(table, on, FEATURES)
    return OnMapModel(FEATURES, tuple(round(w, 4) for w in fitted.weights),
                      round(fitted.bias, 4), round(float(on.mean()), 4))


# Fitted by ``bench/bench_conditions.py`` on Nordland, the Gardens Point sample, the demo route and
# raw pixels on it (novelty and peak of every query against a map of each set's first half; on: a
# right place in it, off: farther than three thresholds from it); the bench reports each set with
# the fit that left it out. Novelty's weight comes out near 0: across these sets a frame's best
# similarity shifts with the conditions (night, winter) more than with being off the map.
DEFAULT_ON_MAP_MODEL = OnMapModel(FEATURES, (-0.071, 1.4585), -3.2573, 0.515)
