"""
Descriptor backends head to head: ms per image at batch 1 and agreement with torch fp32.

    .venv/bin/python bench/bench_backends.py --models dinov2-s dinov2-b --runs 10

Models get seeded random weights (or their shipped weights where they need none): speed
does not depend on weight values, and agreement is measured on real images from
../shared/data.  Runs of all configurations of a model are interleaved, so load from
other processes hits them alike; the table reports medians.  ``--starts`` adds the first
and second start (fresh processes, cold then warm cache) of torch-compile and of the
fastest configuration.  The last line: ``model=... best=backend:precision speedup=...``
(vs torch fp32, the fastest within cosine 0.99) ``cos=... compile_second_start_s=...``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.imaging import read_rgb
from vpr_ros.inference.auto import MIN_COSINE
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.inference.factory import build_extractor, tensorrt_problem
from vpr_ros.inference.parity import compare_descriptors
from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.models import registry

from common import SHARED_DATA, measure_starts, print_machine, seeded_model

DEFAULT_MODELS = ("baseline", "dinov2-s", "dinov2-b", "scicevpr-b", "mutualvpr-b")


def real_images() -> list[np.ndarray]:
    paths = sorted((SHARED_DATA / "nordland_trimmed" / "winter").glob("*.png"))[::450]
    paths += [
        SHARED_DATA / "tokyo_pair" / "query.jpg",
        SHARED_DATA / "tokyo_pair" / "database.png",
    ]
    return [read_rgb(p) for p in paths]


CPU_CONFIGS = (
    ("torch", "fp32"),  # the reference: first
    ("torch", "bf16"),
    ("torch-compile", "bf16"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
)


COMPILE = "torch-compile:bf16"


def extractors(
    name: str, cache_dir: Path, only: list[str] | None = None
) -> dict[str, DescriptorExtractor]:
    """Every configuration that runs here (or those in ``only``), by label."""
    model, spec, fingerprint = seeded_model(name)
    configs = list(CPU_CONFIGS)
    if tensorrt_problem() is None:
        configs += [("tensorrt", "fp32"), ("tensorrt", "fp16")]
    if only:
        configs = [c for c in configs if c == CPU_CONFIGS[0] or ":".join(c) in only]
    found: dict[str, DescriptorExtractor] = {}
    for backend, precision in tqdm(configs, desc=f"building {name}", unit="config"):
        try:
            found[f"{backend} {precision}"] = build_extractor(
                backend, precision, model, spec, fingerprint, cache_dir
            )
        except BackendUnavailableError as e:
            print(f"({backend} {precision} left out: {e})", flush=True)
    return found


def bench_model(
    name: str, images: list[np.ndarray], runs: int, cache_dir: Path, only: list[str] | None
) -> tuple[list[str], dict]:
    """Table rows of one model and its summary (fastest within cosine 0.99 of fp32)."""
    configs = extractors(name, cache_dir, only)
    spec = next(iter(configs.values())).spec
    reference = configs["torch fp32"].extract(images)
    one = preprocess_batch(images[:1], spec)
    times: dict[str, list[float]] = {label: [] for label in configs}
    for extractor in configs.values():  # warm-up (allocations, lazy initialisation)
        extractor.extract_preprocessed(one)
    for _ in tqdm(range(runs), desc=f"timing {name}", unit="round"):
        for label, extractor in configs.items():
            start = time.perf_counter()
            extractor.extract_preprocessed(one)
            times[label].append(time.perf_counter() - start)
    base = float(np.median(times["torch fp32"]))
    rows = []
    results = {}
    for label, extractor in configs.items():
        ms = float(np.median(times[label]))
        agreement = compare_descriptors(reference, extractor.extract(images))
        results[label] = (base / ms, agreement.min_cosine)
        size = "x".join(map(str, spec.input_size))
        rows.append(
            f"| {name} | {size} | {label} | {ms * 1000:.1f} | {base / ms:.2f}x |"
            f" {agreement.min_cosine:.5f} |"
        )
        print(rows[-1], flush=True)
    best = max(
        (label for label, (_, cosine) in results.items() if cosine >= MIN_COSINE),
        key=lambda label: results[label][0],
    )
    summary = {
        "model": name,
        "best": best.replace(" ", ":"),
        "speedup": f"{results[best][0]:.2f}",
        "cos": f"{results[best][1]:.4f}",
    }
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument(
        "--runs", type=int, default=10, help="timed runs per configuration (after one warm-up)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, help="where ONNX files/engines go (default: a temporary folder)"
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        help="only these backend:precision pairs (torch:fp32, the reference, always runs)",
    )
    parser.add_argument(
        "--starts",
        action="store_true",
        help="first and second start (fresh processes, cold then warm cache) of torch-compile"
        " and the fastest configuration (bench_startup.py)",
    )
    args = parser.parse_args()
    print_machine()
    images = real_images()
    header = [
        (
            f"batch 1, median of {args.runs} runs; cosine: min over {len(images)} real images vs"
            f" torch fp32; {torch.get_num_threads()} torch threads"
        ),
        "",
        "| model | input | backend | ms/image | vs torch fp32 | min cosine |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    rows = []
    summaries = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            try:
                registry.spec(name)
            except KeyError:
                print(f"(skipping {name}: not registered)")
                continue
            cache_dir = args.cache_dir or Path(tmp) / name
            compile_start = args.starts and (not args.configs or COMPILE in args.configs)
            if compile_start:  # first: its cold start is the one that fills the cache
                starts = measure_starts(name, [COMPILE], cache_dir)
                second = starts[COMPILE]["second"].get("wall_s", float("nan"))
            model_rows, summary = bench_model(name, images, args.runs, cache_dir, args.configs)
            if compile_start:
                summary["compile_second_start_s"] = f"{second:.1f}"
            if args.starts:
                config = summary["best"]
                if config not in ("torch:fp32", COMPILE):
                    fresh = measure_starts(name, [config], Path(tmp) / f"{name}-best")[config]
                    summary["best_first_start_s"] = f"{fresh['first'].get('wall_s', -1):.1f}"
                    summary["best_second_start_s"] = f"{fresh['second'].get('wall_s', -1):.1f}"
            rows += model_rows
            summaries.append(summary)
    print("\n" + "\n".join(header[2:] + rows))
    # One line: the last model's keys bare, earlier ones prefixed by the model name.
    *earlier, last = summaries
    print(
        " ".join(
            [f"{s['model']}.{k}={v}" for s in earlier for k, v in s.items() if k != "model"]
            + [f"{k}={v}" for k, v in last.items()]
        )
    )


if __name__ == "__main__":
    main()
