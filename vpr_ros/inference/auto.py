"""
``auto``: the fastest backend for this host, by measurement, measured once and cached.

Every backend/precision that can run here is built (ONNX exports, int8 files, compiled
packages: all cached anyway), checked against torch fp32 on a few probe images (cosine
>= MIN_COSINE), and timed at batch 1 in interleaved rounds for a bounded time.  The
fastest wins.  The choice is written to the cache directory under a key of the model,
its weights, the CPU and the library versions, so later starts read it instead of
measuring; a changed key (new weights, another CPU, an upgraded library) measures again.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.host import cpu_flags
from vpr_ros.inference.engine_cache import cached_build, model_cpu_key
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.inference.parity import compare_descriptors
from vpr_ros.inference.preprocess import preprocess_batch
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


def measure(
    pairs: list[tuple[str, str]], build: Build, spec: ModelSpec, budget_s: float
) -> tuple[list[Measured], dict[tuple[str, str], DescriptorExtractor]]:
    """
    Build and time every pair (the first is the reference); return results and extractors.

    Only pairs within MIN_COSINE of the reference are timed.  Runs are interleaved round by
    round, so load from other processes hits all alike; timing stops after ``budget_s`` per
    candidate (at least two runs each).
    """
    images = probe_images(spec)
    built: dict[tuple[str, str], DescriptorExtractor] = {}
    build_s: dict[tuple[str, str], float] = {}
    cosines: dict[tuple[str, str], float] = {}
    reference = None
    for pair in pairs:
        start = time.perf_counter()
        try:
            extractor = build(*pair)
            descriptors = extractor.extract(images)  # also the warm-up run
        except BackendUnavailableError as e:
            log.info("auto: %s %s cannot run here (%s)", *pair, e)
            continue
        build_s[pair] = time.perf_counter() - start
        reference = descriptors if reference is None else reference
        cosines[pair] = compare_descriptors(reference, descriptors).min_cosine
        if cosines[pair] < MIN_COSINE:
            log.info("auto: %s %s left out: cosine %.4f to torch fp32", *pair, cosines[pair])
            continue
        built[pair] = extractor
    batch = preprocess_batch(images[:1], spec)
    times: dict[tuple[str, str], list[float]] = {pair: [] for pair in built}
    deadline = time.perf_counter() + budget_s * len(built)
    while min(len(t) for t in times.values()) < 2 or time.perf_counter() < deadline:
        for pair, extractor in built.items():
            start = time.perf_counter()
            extractor.extract_preprocessed(batch)
            times[pair].append(time.perf_counter() - start)
    results = [
        Measured(*pair, float(np.median(times[pair])) * 1000, cosines[pair], build_s[pair])
        for pair in built
    ]
    return results, built


def choice_key(spec: ModelSpec, fingerprint: str, precision: str) -> dict:
    """Return what a measured choice depends on: model, weights, CPU and library versions."""
    return {**model_cpu_key(spec, fingerprint, precision), "libraries": library_versions()}


def choice_path(cache_dir: Path, spec: ModelSpec, fingerprint: str, precision: str) -> Path:
    return Path(cache_dir) / f"{spec.name}-{fingerprint}-{precision}-auto.json"


def choose(
    spec: ModelSpec,
    fingerprint: str,
    precision: str,
    cache_dir: Path,
    build: Build,
    budget_s: float = 3.0,
) -> DescriptorExtractor:
    """
    Return the extractor of the fastest (backend, precision) here, measuring only once.

    ``build(backend, precision)`` makes an extractor; ``precision`` 'auto' lets the
    precision be chosen too.
    """
    built: dict[tuple[str, str], DescriptorExtractor] = {}

    def write_choice(tmp: Path) -> None:
        results, extractors = measure(candidates(precision), build, spec, budget_s)
        built.update(extractors)
        # torch fp32 is always measured (the reference) but only wins where fp32 was asked.
        eligible = [r for r in results if precision in ("auto", r.precision)]
        best = min(eligible, key=lambda r: r.ms)
        tmp.write_text(
            json.dumps({"best": asdict(best), "measured": [asdict(r) for r in results]}, indent=2)
        )

    path = cached_build(
        choice_path(cache_dir, spec, fingerprint, precision),
        choice_key(spec, fingerprint, precision),
        write_choice,
        f"auto backend choice for {spec.name}",
    )
    choice = json.loads(path.read_text())
    best = Measured(**choice["best"])
    reference = next(
        r["ms"] for r in choice["measured"] if (r["backend"], r["precision"]) == REFERENCE
    )
    log.info(
        "descriptor backend auto -> %s %s for %s: %.1f ms/image at batch 1, %.2fx torch fp32"
        " (%.1f ms), cosine %.4f to torch fp32; the fastest of %s (%s%s)",
        best.backend,
        best.precision,
        spec.name,
        best.ms,
        reference / best.ms,
        reference,
        best.min_cosine,
        ", ".join(f"{r['backend']} {r['precision']} {r['ms']:.1f} ms" for r in choice["measured"]),
        "measured now" if built else "measured earlier",
        f", cached in {path}",
    )
    pair = (best.backend, best.precision)
    return built.get(pair) or build(*pair)
