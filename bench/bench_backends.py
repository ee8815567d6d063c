"""
Descriptor backends head to head: ms per image at batch 1 and agreement with torch fp32.

    .venv/bin/python bench/bench_backends.py --models dinov2-s dinov2-b --runs 10

Models get seeded random weights (or their shipped weights where they need none): speed
does not depend on weight values, and agreement is measured on real images from
../shared/data.  Each configuration runs in a child process of its own (as ``auto``
measures them): one whose library crashes or hangs is left out with the reason instead of
ending the benchmark.  Runs of all configurations of a model are interleaved, so load from
other processes hits them alike; the table reports medians.  ``--starts`` adds the first
and second start (fresh processes, cold then warm cache) of torch-compile and of the
fastest configuration.  The last line: ``model=... best=backend:precision speedup=...``
(vs torch fp32, the fastest within cosine 0.99) ``cos=... compile_second_start_s=...``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vpr_ros.imaging import read_rgb
from vpr_ros.inference.auto import MIN_COSINE, Timeouts
from vpr_ros.inference.auto_child import RUN, CandidateChild, ChildFailed, Job, Recipe, Refused
from vpr_ros.inference.factory import tensorrt_problem
from vpr_ros.inference.parity import compare_descriptors
from vpr_ros.models import registry
from vpr_ros.models.spec import ModelSpec

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
TIMEOUTS = Timeouts()  # auto's: a configuration silent for longer is hung and left out


def start_children(
    name: str, images: list[np.ndarray], cache_dir: Path, only: list[str] | None = None
) -> tuple[dict[str, CandidateChild], dict[str, np.ndarray], ModelSpec]:
    """
    One child process per configuration that runs here (or those in ``only``), by label.

    Each builds its extractor and describes ``images`` (also its warm-up); a configuration
    whose library crashes or hangs ends only its child and is left out with the reason.
    """
    model, spec, _ = seeded_model(name)
    weights = None
    if spec.needs_weights:  # the children load the same seeded weights from a checkpoint
        weights = str(cache_dir / f"{name}-seeded.pt")
        cache_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
    recipe = Recipe(name, weights, str(cache_dir))
    configs = list(CPU_CONFIGS)
    if tensorrt_problem() is None:
        configs += [("tensorrt", "fp32"), ("tensorrt", "fp16")]
    if only:
        configs = [c for c in configs if c == CPU_CONFIGS[0] or ":".join(c) in only]
    children: dict[str, CandidateChild] = {}
    descriptors: dict[str, np.ndarray] = {}
    for backend, precision in tqdm(configs, desc=f"building {name}", unit="config"):
        label = f"{backend} {precision}"
        child = CandidateChild()
        job = Job(recipe, backend, precision, images, torch.get_num_threads())
        try:
            reply = child.request(job, TIMEOUTS.build_s, "building")
        except ChildFailed as e:
            print(f"({label} left out: {e})", flush=True)
            continue
        if isinstance(reply, Refused):
            print(f"({label} left out: {reply.reason})", flush=True)
            child.close()
            continue
        children[label] = child
        descriptors[label] = reply.descriptors
    return children, descriptors, spec


def bench_model(
    name: str, images: list[np.ndarray], runs: int, cache_dir: Path, only: list[str] | None
) -> tuple[list[str], dict]:
    """Table rows of one model and its summary (fastest within cosine 0.99 of fp32)."""
    children, descriptors, spec = start_children(name, images, cache_dir, only)
    if "torch fp32" not in children:
        raise SystemExit(f"{name}: the reference torch fp32 failed (above); nothing to compare")
    times: dict[str, list[float]] = {label: [] for label in children}
    try:
        for _ in tqdm(range(runs), desc=f"timing {name}", unit="round"):
            for label, child in list(children.items()):
                try:
                    times[label].append(child.request(RUN, TIMEOUTS.run_s, "timing"))
                except ChildFailed as e:
                    print(f"({label} left out: {e})", flush=True)
                    del children[label]
    finally:
        for child in children.values():
            child.close()
    base = float(np.median(times["torch fp32"]))
    rows = []
    results = {}
    for label in children:
        ms = float(np.median(times[label]))
        agreement = compare_descriptors(descriptors["torch fp32"], descriptors[label])
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
