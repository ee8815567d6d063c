"""
The ROS-free pipeline: image -> descriptor -> search -> re-rank -> temporal filter -> Match.

The node, `vpr-ros localize`, `vpr-ros eval` and the demo all go through
``Localizer.match`` (``localize`` adds the descriptor), so what is evaluated is what runs
on the robot. Every decision about a match is taken here: the candidates and their order,
the confidence, whether a pose prior is published and its covariance.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from operator import attrgetter

import numpy as np

from vpr_ros import parameters
from vpr_ros.confidence import (
    FITTED_RERANKERS,
    ConfidenceModel,
    default_model,
    distances,
    frame_features,
)
from vpr_ros.errors import ConfigError
from vpr_ros.rerank import LocalFeatures, Reranker, create_reranker
from vpr_ros.temporal.seqslam import SequenceConfig, SequenceMatcher
from vpr_ros.temporal.hmm import Route, TemporalConfig, TemporalFilter, TemporalResult
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.maps.local_features import LocalFeatureStore, resolve_rerank
from vpr_ros.maps.mapdir import VprMap
from vpr_ros.on_map import DEFAULT_ON_MAP_MODEL, OnMapFilter, OnMapModel, peak

# ratio margin above which the retrieval's own answer replaces a track's that it did not see
RETRIEVAL_STANDS_OUT = 0.05


@dataclass(frozen=True)
class Ranked:
    """
    One frame's places, best first, with every score a stage gave them, kept aligned.

    scores: cosine of the global descriptors; rerank: the re-ranker's (NaN: not re-ranked), None
    without one; temporal: the filter's belief (the HMM's posterior, SeqSLAM's path score), None
    without one.
    """

    ids: np.ndarray
    scores: np.ndarray
    rerank: np.ndarray | None = None
    temporal: np.ndarray | None = None

    def take(self, rows: np.ndarray) -> Ranked:
        """Return these rows, in this order, of every column."""
        return Ranked(*(None if c is None else c[rows]
                        for c in (self.ids, self.scores, self.rerank, self.temporal)))

    def head(self, n: int) -> Ranked:
        return self.take(np.arange(min(n, len(self.ids))))


@dataclass
class Candidate:
    place_id: int
    score: float  # cosine similarity of the global descriptors
    # the re-ranker's score (its meaning: see the re-ranker); None without re-ranking
    rerank_score: float | None
    position: list[float] | None  # map frame (UTM metres when the map came from GPS)
    orientation: list[float] | None  # quaternion x, y, z, w
    stamp_ns: int  # when the map image was taken
    source: str
    # the temporal filter's belief in this place; None without a filter
    temporal_score: float | None = None


@dataclass
class PosePrior:
    """
    What /vpr/pose_prior carries.

    The best place's pose and a 6x6 covariance (x, y, z, roll, pitch, yaw).
    """

    position: list[float]
    orientation: list[float]  # quaternion x, y, z, w; identity when the map has no orientation
    covariance: list[float]  # 36 values, row-major


@dataclass(frozen=True)
class TemporalState:
    """
    The temporal filter's state after a frame: msg/TemporalState.msg, field for field.

    ``applied``: the filter's ranking is the answer (seqslam always; hmm once its motion model
    explained the recent frames, see temporal/hmm.py, "Trust"). evidence, agreement, support:
    hmm only (None for seqslam).
    """

    filter: str
    reset: bool = False
    applied: bool = True
    evidence: float | None = None
    agreement: float | None = None
    support: float | None = None


@dataclass
class StageLatency:
    """
    Milliseconds per stage of one frame: msg/StageLatency.msg, field for field (None: not run).

    The node times age_at_receipt, take (both outside the total), queue and decode; ``localize``
    the descriptor; ``match`` the rest and the total.
    """

    age_at_receipt: float | None = None
    take: float | None = None
    queue: float | None = None
    decode: float | None = None
    descriptor: float | None = None
    search: float | None = None
    rerank: float | None = None
    temporal: float | None = None
    total: float | None = None

    def close(self) -> None:
        """Set the total: every stage from the queue on that ran."""
        stages = (self.queue, self.decode, self.descriptor, self.search, self.rerank,
                  self.temporal)
        self.total = sum(ms for ms in stages if ms is not None)


@dataclass
class Match:
    stamp_ns: int
    frame_id: str
    map_id: str
    model: str
    candidates: list[Candidate]
    confidence: float
    latency_ms: StageLatency = field(default_factory=StageLatency)
    covariance_xy: list[list[float]] | None = None  # 2x2, metres^2, see Localizer.pose_covariance
    pose_prior: PosePrior | None = None  # set when the match is confident enough to act on
    rerank: str | None = None  # the re-ranker that ordered the candidates
    temporal: TemporalState | None = None  # None without a temporal filter
    # probability that the frame shows a place of this map at all (see vpr_ros.on_map); None when
    # the map holds no null distribution to judge it by
    on_map: float | None = None
    # confident, on the map and (with a trusted track) seen by this frame's own retrieval: a pose
    # prior is given where the map has positions
    actionable: bool = False
    # what ``confidence`` was computed from (``vpr_ros.confidence.frame_features``): for refitting
    confidence_features: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


@dataclass(frozen=True)
class LocalizerConfig:
    """
    How the pipeline decides: the pipeline's options of ``parameters.PARAMETERS``.

    Their defaults, ranges and choices come from that table (the node's parameters and the
    commands' flags set them, through ``from_parameters``). rerank: none | auto (the re-ranker
    whose features the map holds, or none) | a re-ranker name; rerank_top_k: global candidates
    it re-sorts. temporal: none | hmm (the place filter over the map's route) | seqslam.
    min_confidence: calibrated probability that the best place is right, above which a pose
    prior is given.
    """

    top_k: int = parameters.BY_NAME["top_k"].default
    rerank: str = parameters.BY_NAME["rerank"].default
    rerank_top_k: int = parameters.BY_NAME["rerank_top_k"].default
    temporal: str = parameters.BY_NAME["temporal"].default
    min_confidence: float = parameters.BY_NAME["min_confidence"].default
    ambiguity_radius_m: float = parameters.BY_NAME["ambiguity_radius_m"].default
    base_sigma_m: float = parameters.BY_NAME["base_sigma_m"].default
    sequence: SequenceConfig = SequenceConfig()
    hmm: TemporalConfig = TemporalConfig()

    def __post_init__(self):
        values = {p.name: attrgetter(p.config)(self) for p in parameters.PIPELINE}
        if problems := parameters.problems(values):
            raise ConfigError(
                "invalid pipeline options: " + "; ".join(problems)
                + " (the node's parameters and the commands' flags of the same names)"
            )

    @classmethod
    def from_parameters(cls, values: dict) -> LocalizerConfig:
        """Build the configuration from the table's pipeline options in ``values``, by name."""
        flat = {p.config: values[p.name] for p in parameters.PIPELINE}
        sequence = {k.split(".")[1]: flat.pop(k) for k in list(flat) if k.startswith("sequence.")}
        return cls(**flat, sequence=SequenceConfig(**sequence))


class HmmStage:
    """
    temporal: hmm. The place filter follows the robot along the map's route.

    It looks at the (re-ranked) candidates of the map's search; ``search`` leaves that to faiss.
    """

    def __init__(self, vpr_map: VprMap, xy: np.ndarray | None, config: LocalizerConfig):
        self.map = vpr_map
        self.filter = TemporalFilter(Route.of_map(xy, len(vpr_map)), config.hmm)
        self.candidates, self.top_k = config.hmm.candidates, max(config.top_k, 2)

    def reset(self) -> None:
        self.filter.reset()

    def search(self, descriptor: np.ndarray, k: int) -> Ranked | None:
        return None

    def follow(self, ranked: Ranked, descriptor: np.ndarray, travelled_m: float | None,
               frames: float) -> tuple[Ranked, TemporalState, TemporalResult]:
        """Push the candidates through the filter; its answer with every score aligned."""
        r = self.filter.push(ranked.ids, self.observed(ranked), travelled_m, k=self.top_k,
                             frames=frames)
        position = {int(i): j for j, i in enumerate(ranked.ids)}
        rows = np.array([position.get(int(i), -1) for i in r.place_ids], dtype=np.int64)
        seen = rows >= 0
        scores = np.where(seen, ranked.scores[rows], 0.0).astype(np.float32)
        # places the track predicts but the search did not return get their search-space cosine
        if not seen.all():
            scores[~seen] = self.map.index.similarity(descriptor, r.place_ids[~seen])
        rerank = (None if ranked.rerank is None
                  else np.where(seen, ranked.rerank[rows], np.nan))
        state = TemporalState("hmm", bool(r.reset), bool(r.applied), round(float(r.evidence), 3),
                              round(float(r.agreement), 4), round(float(r.support), 4))
        return Ranked(r.place_ids, scores, rerank, r.scores), state, r

    @staticmethod
    def observed(ranked: Ranked) -> np.ndarray:
        """
        Return what the filter observes.

        The re-ranker's scores when it found evidence in this frame (they separate true from false
        places far better than global scores), else the global scores, so a frame where nothing
        verified (e.g. images too small for local features) does not leave the filter blind.
        """
        if ranked.rerank is None:
            return ranked.scores
        evidence = np.nan_to_num(np.asarray(ranked.rerank, dtype=np.float64), nan=0.0)
        return evidence if evidence.max() > 0 else ranked.scores


class SeqslamStage:
    """temporal: seqslam. Straight paths over every map place; their ranking is the search's."""

    candidates = 0

    def __init__(self, vpr_map: VprMap, config: SequenceConfig):
        self.map = vpr_map
        self.matcher = SequenceMatcher(len(vpr_map), config)

    def reset(self) -> None:
        self.matcher.reset()

    def search(self, descriptor: np.ndarray, k: int) -> Ranked:
        similarity = np.asarray(self.map.descriptors) @ descriptor
        ids, path_scores = self.matcher.push(similarity, k)
        return Ranked(ids, similarity[ids], temporal=path_scores)

    def follow(self, ranked: Ranked, descriptor: np.ndarray, travelled_m: float | None,
               frames: float) -> tuple[Ranked, TemporalState, None]:
        return ranked, TemporalState("seqslam"), None


class Localizer:
    """
    Localizes images against a map, one frame after another (the temporal filter keeps state).

    Per frame: the global descriptor finds candidates; a re-ranker (when configured and the
    map holds its features) re-sorts the first ``rerank_top_k`` by local features; the temporal
    filter (``hmm`` by default) follows the robot along the map's route using those candidates
    and, when given, the odometry distance travelled since the previous frame. Confidence is
    the calibrated probability that the best place is right (``vpr_ros.confidence``): from the
    ratio-test margin, plus the filter's support when it runs. The pose covariance grows with
    ambiguity: candidates that score almost as well but lie elsewhere spread it.
    """

    def __init__(
        self,
        vpr_map: VprMap,
        extractor: DescriptorExtractor | None,
        config: LocalizerConfig = LocalizerConfig(),
        on_map_model: OnMapModel | None = None,
        confidence_models: dict[tuple[str, ...], ConfidenceModel] | None = None,
    ):
        """
        Set up the pipeline.

        ``extractor`` may be None to ``match`` precomputed descriptors without re-ranking
        (evaluation). ``on_map_model``, ``confidence_models`` (by their features): instead of the
        shipped ones (fits that leave a data set out).
        """
        self.map = vpr_map
        self.extractor = extractor
        self.config = config
        # by column: a Place object per map place would cost seconds at a million places
        self._positions = vpr_map.places.positions()
        xy = self._positions[:, :2]
        self._xy = None if np.isnan(xy).all() else xy
        self.reranker, self.local_store = self._open_reranker()
        self.temporal = (
            HmmStage(vpr_map, self._xy, config) if config.temporal == "hmm"
            else SeqslamStage(vpr_map, config.sequence)
            if config.temporal == "seqslam" and config.sequence.length > 1 else None
        )
        self.confidence_models = confidence_models or {}
        self.null = vpr_map.null_similarity
        self.on_map = None if self.null is None else OnMapFilter(
            on_map_model or DEFAULT_ON_MAP_MODEL
        )

    def reset(self) -> None:
        """Forget what earlier frames said (a new run of queries, a time gap)."""
        for state in (self.temporal, self.on_map):
            if state is not None:
                state.reset()

    def _open_reranker(self) -> tuple[Reranker | None, LocalFeatureStore | None]:
        """
        Return the configured re-ranker and the map's features for it.

        A map without them is refused (MapError).
        """
        name = resolve_rerank(self.config.rerank, self.map.path)
        if name is None:
            return None, None
        if self.extractor is None:
            raise ConfigError(
                f"re-ranker {name!r} needs the descriptor extractor; pass one to the Localizer"
            )
        reranker = create_reranker(name, self.extractor)
        return reranker, LocalFeatureStore.open(self.map.path, reranker.describe(), len(self.map))

    def localize(
        self,
        rgb: np.ndarray,
        stamp_ns: int = 0,
        frame_id: str = "",
        latency: StageLatency | None = None,
        travelled_m: float | None = None,
        frames: float = 1.0,
    ) -> Match:
        """
        One camera frame (RGB uint8).

        ``latency``: the caller's stages so far (the node's queue and decode), completed here.
        ``travelled_m``: odometry distance since the previous frame (or None); ``frames``: camera
        frames since the previous call (more than 1 when frames were dropped).
        """
        latency = latency or StageLatency()
        t0 = time.perf_counter()
        query_local = None
        if self.reranker is not None:
            descriptor, query_local = self.reranker.extract_query(rgb, self.extractor)
        else:
            descriptor = self.extractor.extract([rgb])[0]
        latency.descriptor = (time.perf_counter() - t0) * 1e3
        return self.match(descriptor, query_local, stamp_ns, frame_id, travelled_m, frames,
                          latency)

    def match(
        self,
        descriptor: np.ndarray,
        query_local: LocalFeatures | None = None,
        stamp_ns: int = 0,
        frame_id: str = "",
        travelled_m: float | None = None,
        frames: float = 1.0,
        latency: StageLatency | None = None,
    ) -> Match:
        """Run the pipeline after the descriptor: search, re-rank, filter, confidence, prior."""
        cfg = self.config
        latency = latency or StageLatency()
        t0 = time.perf_counter()
        ranked = self._search(descriptor)
        # confidence, covariance and on-map evidence judge what the descriptor alone says
        retrieval = ranked
        t1 = time.perf_counter()
        latency.search = (t1 - t0) * 1e3
        if self.reranker is not None and query_local is not None:
            ranked = self._rerank(query_local, ranked)
            latency.rerank = (time.perf_counter() - t1) * 1e3
        filtered, temporal = None, None
        unfiltered = ranked
        if self.temporal is not None:
            t2 = time.perf_counter()
            ranked, temporal, filtered = self.temporal.follow(ranked, descriptor, travelled_m,
                                                              frames)
            if filtered is not None:  # SeqSLAM's time is the search's
                latency.temporal = (time.perf_counter() - t2) * 1e3
        # The filter's support counts only where its ranking is the answer: on frames it leaves
        # to the retrieval (motion model not confirmed) the confidence is the retrieval's own.
        applied = filtered if filtered is not None and filtered.applied else None
        # The frame's own evidence is its first hmm.candidates (10) retrieval candidates, however
        # many top_k asks to report (eval's 20 would otherwise corroborate more by chance).
        own = retrieval.head(cfg.hmm.candidates)
        track_missed = applied is not None and (
            not self._corroborated(ranked.ids[0], own.ids) or filtered.stalled)
        if track_missed and frame_features(retrieval.scores, retrieval.ids,
                                           self._xy)["margin"] > RETRIEVAL_STANDS_OUT:
            # The retrieval did not see the track's answer and its own best place stands out:
            # after a jump it points somewhere distinct, while a track bridging frames the
            # retrieval fails on rarely meets a distinct retrieval answer. The retrieval answers
            # this frame. (Shuffled chunks of 10, Recall@1: demo route 0.695 -> 0.720, Nordland
            # 0.542 -> 0.569, above plain; in order the demo route loses one frame of 357.)
            ranked, applied = unfiltered, None
            temporal = replace(temporal, applied=False)
        # The re-ranker's score of the answer counts where the default models know its scale, and
        # where the frame could be verified at all: a frame with fewer local features than the
        # re-ranker's minimum of inliers (Nordland's 64x32 frames have none) is judged without it,
        # not as an unverified answer.
        best_rerank = (
            ranked.rerank[0]
            if ranked.rerank is not None and len(ranked.ids)
            and self.reranker.name in FITTED_RERANKERS
            and len(query_local.descriptors) >= self.reranker.conf["min_inliers"]
            else None
        )
        features = frame_features(retrieval.scores, retrieval.ids, self._xy, applied, best_rerank)
        confidence = (self.confidence_models.get(tuple(features))
                      or default_model(features))(**features)
        on_map = self._on_map(own.scores, filtered, frames, track_missed)
        # the models give P(right | on the map): off it nothing is right
        if on_map is not None:
            confidence *= on_map
        covariance_xy = self.pose_covariance(ranked.scores, ranked.ids)
        actionable = (len(ranked.ids) > 0 and confidence >= cfg.min_confidence
                      and (applied is None or (not track_missed and applied.settled)))
        candidates = [self._candidate(ranked, j) for j in range(min(cfg.top_k, len(ranked.ids)))]
        latency.close()
        return Match(
            stamp_ns=stamp_ns,
            frame_id=frame_id,
            map_id=self.map.map_id,
            model=self.map.model["name"],
            candidates=candidates,
            confidence=confidence,
            latency_ms=latency,
            covariance_xy=covariance_xy,
            pose_prior=(
                self.pose_prior(candidates[0], covariance_xy) if actionable else None
            ),
            actionable=actionable,
            rerank=self.reranker.name if self.reranker is not None else None,
            temporal=temporal,
            on_map=on_map,
            confidence_features=features,
        )

    def _search(self, descriptor: np.ndarray) -> Ranked:
        """
        Return the map's best places: faiss, or a temporal stage's own search (SeqSLAM).

        As many as the later stages look at (top_k, the re-ranker's and the filter's candidates).
        """
        cfg = self.config
        k = max(cfg.top_k, 2, cfg.rerank_top_k if self.reranker else 0,
                self.temporal.candidates if self.temporal else 0)
        if self.temporal is not None and (own := self.temporal.search(descriptor, k)) is not None:
            return own
        scores, ids = self.map.index.search(descriptor[None], k)
        keep = ids[0] >= 0
        return Ranked(ids[0][keep], scores[0][keep])

    def _on_map(self, retrieval_scores: np.ndarray, filtered: TemporalResult | None,
                frames: float, track_missed: bool) -> float | None:
        """
        P(the frame is on the map), from the map's null, the frame's candidates and the tracks.

        ``filtered``: the temporal filter's result. The main track's Bayes factor counts while it
        is trusted (``applied``), the fresh track's always: retrieval that follows a route
        coherently is on the map, wherever on it.
        """
        if self.on_map is None or len(retrieval_scores) == 0:
            return None
        features = {"novelty": self.null.novelty(float(retrieval_scores[0])),
                    "peak": peak(retrieval_scores)}
        trusted = filtered is not None and filtered.applied
        log_bf = max(filtered.log_bayes_factor if trusted else 0.0,
                     filtered.fresh_log_bayes_factor if filtered is not None else 0.0)
        left = filtered.left_route if trusted else 0.0
        return self.on_map.push(math.exp(min(log_bf, 30.0)), frames, left, track_missed,
                                **features)

    def _corroborated(self, best: int, retrieval_ids: np.ndarray) -> bool:
        """
        Whether this frame's own retrieval saw the track's answer (within one place along it).

        A track answers through frames where the retrieval misses; those answers are not acted on,
        since after a jump or off the map they are the old track's continuation.
        """
        offsets = self.temporal.filter.route.offset(int(best),
                                                    np.asarray(retrieval_ids, dtype=np.int64))
        return bool(np.any(np.abs(offsets) <= 1.0))

    def _rerank(self, query: LocalFeatures, ranked: Ranked) -> Ranked:
        """
        Re-sort the first ``rerank_top_k`` candidates.

        The rest keep their global order, below them.
        """
        head = min(self.config.rerank_top_k, len(ranked.ids))
        order, rerank_scores = self.reranker.rerank(
            query, [self.local_store[int(i)] for i in ranked.ids[:head]], ranked.scores[:head]
        )
        rerank = np.concatenate([rerank_scores, np.full(len(ranked.ids) - head, np.nan)])
        order = np.concatenate([order, np.arange(head, len(ranked.ids))])
        return Ranked(ranked.ids, ranked.scores, rerank, ranked.temporal).take(order)

    def _candidate(self, ranked: Ranked, j: int) -> Candidate:
        p = self.map.places[int(ranked.ids[j])]
        rerank = None if ranked.rerank is None else float(ranked.rerank[j])
        return Candidate(
            place_id=p.place_id,
            score=float(ranked.scores[j]),
            rerank_score=None if rerank is None or math.isnan(rerank) else rerank,
            position=list(p.position) if p.position else None,
            orientation=list(p.orientation) if p.orientation else None,
            stamp_ns=p.stamp_ns,
            source=p.source,
            temporal_score=None if ranked.temporal is None else float(ranked.temporal[j]),
        )

    def pose_covariance(self, scores: np.ndarray, ids: np.ndarray) -> list[list[float]] | None:
        """
        2x2 xy covariance around the best place.

        Base_sigma^2 I plus the spread of weighted alternatives.

        Weights are (d1/di)^8 on descriptor distances: a candidate 10 % farther in descriptor space
        counts about half, 25 % farther about a sixth.
        """
        pos = self._positions[ids, :2]
        if len(ids) == 0 or np.isnan(pos[0]).any():
            return None
        d = distances(scores)
        w = (d[0] / d) ** 8
        w[np.isnan(pos).any(axis=1)] = 0.0
        offsets = np.nan_to_num(pos - pos[0])
        spread = (w[:, None, None] * offsets[:, :, None] * offsets[:, None, :]).sum(0) / w.sum()
        cov = spread + np.eye(2) * self.config.base_sigma_m**2
        return cov.round(4).tolist()

    def pose_prior(
        self, best: Candidate, covariance_xy: list[list[float]] | None
    ) -> PosePrior | None:
        """
        Return the best place's pose with a 6x6 covariance.

        None without a position.
        """
        if covariance_xy is None or best.position is None:
            return None
        cov = [0.0] * 36  # row-major x, y, z, roll, pitch, yaw
        (cov[0], cov[1]), (cov[6], cov[7]) = covariance_xy
        # height is weakly observed by place recognition
        cov[14] = 4.0 * self.config.base_sigma_m**2
        cov[21] = cov[28] = 0.1  # roll, pitch: ~18 deg
        # The map image's heading is roughly the camera's; unknown when the map had no orientation.
        cov[35] = 0.35**2 if best.orientation else math.pi**2
        return PosePrior(list(best.position), list(best.orientation or (0.0, 0.0, 0.0, 1.0)), cov)
