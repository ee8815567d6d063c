"""
Descriptor backends head to head: ms per image at batch 1 and agreement with torch fp32.

    .venv/bin/python bench/bench_backends.py --models dinov2-s dinov2-b --runs 10

Models get seeded random weights (or their shipped weights where they need none): speed
does not depend on weight values, and agreement is measured on real images from
../shared/data.  Runs of all configurations of a model are interleaved, so load from
other processes hits them alike; the table reports medians.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.models.load import load_model, state_dict_fingerprint
from vpr_ros.inference.factory import tensorrt_problem
from vpr_ros.imaging import read_rgb
from vpr_ros.inference.onnx_export import cached_onnx
from vpr_ros.inference.parity import compare_descriptors
from vpr_ros.inference.onnxruntime_backend import OrtExtractor
from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.inference.torch_backend import CompiledTorchExtractor, TorchExtractor
from vpr_ros.models import registry

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_MODELS = ("baseline", "dinov2-s", "dinov2-b", "scicevpr-b", "mutualvpr-b")


def real_images() -> list[np.ndarray]:
    paths = sorted((SHARED_DATA / "nordland_trimmed" / "winter").glob("*.png"))[::450]
    paths += [
        SHARED_DATA / "tokyo_pair" / "query.jpg",
        SHARED_DATA / "tokyo_pair" / "database.png",
    ]
    return [read_rgb(p) for p in paths]


def seeded_model(name: str):
    spec = registry.spec(name)
    if not spec.needs_weights:
        return load_model(name)
    torch.manual_seed(0)
    model = registry.build(name)
    return model, spec, state_dict_fingerprint(name, model.state_dict())


def extractors(name: str, cache_dir: Path) -> dict[str, DescriptorExtractor]:
    model, spec, fingerprint = seeded_model(name)
    found: dict[str, DescriptorExtractor] = {
        "torch fp32": TorchExtractor(model, spec, fingerprint, "fp32", device="cpu"),
        "torch bf16": TorchExtractor(model, spec, fingerprint, "bf16", device="cpu"),
        "torch-compile bf16": CompiledTorchExtractor(model, spec, fingerprint, "bf16"),
    }
    for precision in ("fp32", "int8"):
        found[f"onnxruntime {precision}"] = OrtExtractor(
            spec,
            fingerprint,
            cached_onnx(model, spec, fingerprint, precision, cache_dir),
            precision,
        )
    if tensorrt_problem() is None:
        from vpr_ros.inference.tensorrt_backend import TrtExtractor, cached_engine

        onnx_path = cached_onnx(model, spec, fingerprint, "fp32", cache_dir)
        for precision in ("fp32", "fp16"):
            engine = cached_engine(onnx_path, spec, fingerprint, precision, cache_dir)
            found[f"tensorrt {precision}"] = TrtExtractor(spec, fingerprint, engine, precision)
    return found


def bench_model(name: str, images: list[np.ndarray], runs: int, cache_dir: Path) -> list[str]:
    configs = extractors(name, cache_dir)
    spec = next(iter(configs.values())).spec
    reference = configs["torch fp32"].extract(images)
    one = preprocess_batch(images[:1], spec)
    times: dict[str, list[float]] = {label: [] for label in configs}
    for extractor in configs.values():  # warm-up (allocations, lazy initialisation)
        extractor.extract_preprocessed(one)
    for _ in range(runs):
        for label, extractor in configs.items():
            start = time.perf_counter()
            extractor.extract_preprocessed(one)
            times[label].append(time.perf_counter() - start)
    base = float(np.median(times["torch fp32"]))
    rows = []
    for label, extractor in configs.items():
        ms = float(np.median(times[label]))
        agreement = compare_descriptors(reference, extractor.extract(images))
        size = "x".join(map(str, spec.input_size))
        rows.append(
            f"| {name} | {size} | {label} | {ms * 1000:.1f} | {base / ms:.2f}x |"
            f" {agreement.min_cosine:.5f} |"
        )
        print(rows[-1], flush=True)
    return rows


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
    args = parser.parse_args()
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
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            try:
                registry.spec(name)
            except KeyError:
                print(f"(skipping {name}: not registered)")
                continue
            rows += bench_model(name, images, args.runs, args.cache_dir or Path(tmp))
    print("\n" + "\n".join(header[2:] + rows))


if __name__ == "__main__":
    main()
