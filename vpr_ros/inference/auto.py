"""
``auto``: the fastest backend for this host, by measurement, measured once and cached.

Every backend/precision that can run here is built (ONNX exports, int8 files, compiled
packages: all cached anyway), checked against torch fp32 on a few probe images (cosine
>= MIN_COSINE), and timed at batch 1 in interleaved rounds for a bounded time.  The
fastest wins.  Each candidate runs in a child process of its own (``auto_child``): one
that crashes, hangs or raises is left out with the reason, and the others still compete.
The choice, with what was left out and why, is written to the cache directory under a
key of the model, its weights, the CPU and the library versions, so later starts read it
instead of measuring; a changed key (new weights, another CPU, an upgraded library)
measures again.  Only the winner is then built in this process.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.host import cpu_flags
from vpr_ros.inference.auto_child import (
    FAULT_ENV,
    RUN,
    CandidateChild,
    ChildFailed,
    Job,
    Recipe,
    Refused,
    faults_for,
)
from vpr_ros.inference.engine_cache import cached_build, model_cpu_key
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.inference.parity import compare_descriptors
from vpr_ros.models.spec import ModelSpec

log = logging.getLogger(__name__)

MIN_COSINE = 0.99
REFERENCE = ("torch", "fp32")
# Libraries whose version changes the speed of some candidate.
LIBRARIES = ("torch", "onnxruntime", "openvino")

Build = Callable[[str, str], DescriptorExtractor]


@dataclass(frozen=True)
class Measured:
    """One candidate's result: median ms per image at batch 1 and min cosine to torch fp32."""

    backend: str
    precision: str
    ms: float
    min_cosine: float
    build_s: float


def library_versions() -> dict[str, str]:
    """Versions of the installed LIBRARIES ('absent' where one is not installed)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def candidates(precision: str) -> list[tuple[str, str]]:
    """
    (backend, precision) pairs that may run on this CPU, torch fp32 first.

    ``precision`` 'auto' lets the precision be chosen too; another one fixes it.
    """
    has_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))
    pairs = [REFERENCE]
    if has_bf16:  # bf16 without hardware support is emulated: never the fastest
        pairs += [("torch", "bf16"), ("torch-compile", "bf16")]
    versions = library_versions()
    for backend in ("onnxruntime", "openvino"):  # backend name == module name
        if versions[backend] != "absent":
            pairs += [(backend, "fp32"), (backend, "int8")]
            if backend == "openvino" and has_bf16:
                pairs.append((backend, "bf16"))
    return [pair for pair in pairs if precision in ("auto", pair[1]) or pair == REFERENCE]


def probe_images(spec: ModelSpec, count: int = 4) -> list[np.ndarray]:
    """
    Seeded smooth random RGB images at the model's input size.

    Low-frequency content like photographs, so int8 ranges are exercised as on real images.
    """
    rng = np.random.default_rng(0)
    height, width = spec.input_size
    images = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, (height // 16 + 2, width // 16 + 2, 3))
        rows = np.linspace(0, coarse.shape[0] - 1, height)
        cols = np.linspace(0, coarse.shape[1] - 1, width)
        smooth = coarse[rows.astype(int)][:, cols.astype(int)]
        noise = rng.normal(0, 12, (height, width, 3))
        images.append(np.clip(smooth + noise, 0, 255).astype(np.uint8))
    return images


@dataclass(frozen=True)
class Excluded:
    """A candidate left out, and why (not installed, cosine, crashed, hung, raised)."""

    backend: str
    precision: str
    reason: str


@dataclass(frozen=True)
class Timeouts:
    """How long a candidate's child may stay silent before it counts as hung and is killed."""

    build_s: float = 1800.0  # exporting, quantizing or compiling a ViT-B on 2 cores: minutes
    run_s: float = 120.0  # one batch-1 run: seconds even for a ViT-B at 322 px on 2 cores


def measure(
    pairs: list[tuple[str, str]],
    recipe: Recipe,
    reference: np.ndarray,
    images: list[np.ndarray],
    budget_s: float,
    timeouts: Timeouts,
) -> tuple[list[Measured], list[Excluded]]:
    """
    Build and time every pair, each in a child process of its own; return results and exclusions.

    ``reference``: torch fp32's descriptors of ``images``; only pairs within MIN_COSINE of it
    are timed.  Children are started together (their imports overlap) and built one at a time.
    Runs are interleaved round by round, so load from other processes hits all alike; timing
    stops after ``budget_s`` per candidate (at least two runs each).
    """
    import torch

    faults_for(*REFERENCE, os.environ.get(FAULT_ENV, ""))  # a malformed value fails here, once
    excluded: list[Excluded] = []

    def leave_out(pair: tuple[str, str], reason: str, level: int = logging.WARNING) -> None:
        log.log(level, "auto: %s %s left out: %s", *pair, reason)
        excluded.append(Excluded(*pair, reason))

    children = {pair: CandidateChild() for pair in pairs}
    try:
        live: dict[tuple[str, str], CandidateChild] = {}
        build_s: dict[tuple[str, str], float] = {}
        cosines: dict[tuple[str, str], float] = {}
        for pair, child in children.items():
            job = Job(recipe, *pair, images, torch.get_num_threads())
            try:
                reply = child.request(job, timeouts.build_s, "building")
            except ChildFailed as e:
                leave_out(pair, str(e))
                continue
            if isinstance(reply, Refused):
                level = logging.INFO if reply.unavailable else logging.WARNING
                leave_out(pair, f"cannot run here ({reply.reason})", level)
                child.close()
                continue
            cosines[pair] = compare_descriptors(reference, reply.descriptors).min_cosine
            if cosines[pair] < MIN_COSINE:
                leave_out(pair, f"cosine {cosines[pair]:.4f} to torch fp32", logging.INFO)
                child.close()
                continue
            live[pair] = child
            build_s[pair] = reply.build_s
        times: dict[tuple[str, str], list[float]] = {pair: [] for pair in live}
        deadline = time.perf_counter() + budget_s * len(live)
        while live and (
            min(len(times[pair]) for pair in live) < 2 or time.perf_counter() < deadline
        ):
            for pair, child in list(live.items()):
                try:
                    times[pair].append(child.request(RUN, timeouts.run_s, "timing"))
                except ChildFailed as e:
                    leave_out(pair, str(e))
                    del live[pair]
        for child in live.values():
            child.close()
    except BaseException:
        for child in children.values():
            child.kill()
        raise
    results = [
        Measured(*pair, float(np.median(times[pair])) * 1000, cosines[pair], build_s[pair])
        for pair in live
    ]
    return results, excluded


def choice_key(spec: ModelSpec, fingerprint: str, precision: str) -> dict:
    """Return what a measured choice depends on: model, weights, CPU and library versions."""
    key = {**model_cpu_key(spec, fingerprint, precision), "libraries": library_versions()}
    if os.environ.get(FAULT_ENV):  # a choice made under injected faults serves no other start
        key["injected_faults"] = os.environ[FAULT_ENV]
    return key


def choice_path(cache_dir: Path, spec: ModelSpec, fingerprint: str, precision: str) -> Path:
    return Path(cache_dir) / f"{spec.name}-{fingerprint}-{precision}-auto.json"


def choose(
    spec: ModelSpec,
    fingerprint: str,
    precision: str,
    cache_dir: Path,
    build: Build,
    recipe: Recipe,
    budget_s: float = 3.0,
    timeouts: Timeouts = Timeouts(),
) -> DescriptorExtractor:
    """
    Return the extractor of the fastest (backend, precision) here, measuring only once.

    ``build(backend, precision)`` makes an extractor in this process (torch fp32 for the
    reference, then the winner); ``recipe`` lets child processes build the candidates.
    ``precision`` 'auto' lets the precision be chosen too.  BackendUnavailableError when no
    candidate at ``precision`` survives.
    """
    made: dict[tuple[str, str], DescriptorExtractor] = {}

    def write_choice(tmp: Path) -> None:
        images = probe_images(spec)
        made[REFERENCE] = build(*REFERENCE)
        reference = made[REFERENCE].extract(images)
        results, excluded = measure(
            candidates(precision), recipe, reference, images, budget_s, timeouts
        )
        # torch fp32 is always measured (the reference) but only wins where fp32 was asked.
        eligible = [r for r in results if precision in ("auto", r.precision)]
        if not eligible:
            raise BackendUnavailableError(
                f"backend auto: no candidate at precision {precision} survived measurement ("
                + "; ".join(f"{e.backend} {e.precision}: {e.reason}" for e in excluded)
                + "); name a backend and precision that run here, e.g. backend torch"
                " precision fp32"
            )
        best = min(eligible, key=lambda r: r.ms)
        tmp.write_text(
            json.dumps(
                {
                    "best": asdict(best),
                    "measured": [asdict(r) for r in results],
                    "excluded": [asdict(e) for e in excluded],
                },
                indent=2,
            )
        )

    path = cached_build(
        choice_path(cache_dir, spec, fingerprint, precision),
        choice_key(spec, fingerprint, precision),
        write_choice,
        f"auto backend choice for {spec.name}",
    )
    choice = json.loads(path.read_text())
    best = Measured(**choice["best"])
    reference_ms = next(
        (r["ms"] for r in choice["measured"] if (r["backend"], r["precision"]) == REFERENCE),
        float("nan"),  # torch fp32 itself failed in its child
    )
    log.info(
        "descriptor backend auto -> %s %s for %s: %.1f ms/image at batch 1, %.2fx torch fp32"
        " (%.1f ms), cosine %.4f to torch fp32; the fastest of %s; left out: %s (%s%s)",
        best.backend,
        best.precision,
        spec.name,
        best.ms,
        reference_ms / best.ms,
        reference_ms,
        best.min_cosine,
        ", ".join(f"{r['backend']} {r['precision']} {r['ms']:.1f} ms" for r in choice["measured"]),
        "; ".join(
            f"{e['backend']} {e['precision']} ({e['reason']})"
            # a choice cached before exclusions were recorded has none
            for e in choice.get("excluded", [])
        )
        or "none",
        "measured now" if made else "measured earlier",
        f", cached in {path}",
    )
    pair = (best.backend, best.precision)
    return made.get(pair) or build(*pair)
