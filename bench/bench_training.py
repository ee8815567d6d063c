"""Proof that every trainer learns, on this CPU: Nordland places 1-2500 train, 2501-3576 (never seen) evaluate.

    .venv/bin/python bench/bench_training.py [--data ../shared/data/nordland_trimmed] [--only fol] [--out DIR]

Evaluation: winter queries against the summer images of places 2501-3576, right within one
place (the shared data's tolerance 1, about 10 original frames). Each trainer runs through the
same path as `vpr-ros train` (options parsed by its parser) with a small configuration so that
all of them finish in minutes:
- the trainable default: the shipped ImageNet trunk, a learned 64-channel projection, last trunk block tuned;
- SciceVPR teacher then student, MutualVPR and FoL on a DINOv2 of 4 blocks, 64 wide, from random
  weights (no trained DINOv2 weights exist here), at learning rates raised for minutes-long runs.
Prints `baseline_r1=...` (the untrained default `baseline` on the same queries, for comparison)
and one line per trainer: `trainer=NAME r1_before=A r1_after=B minutes=M`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRAIN_PLACES = 2500
TINY = "64x4"

# name -> `vpr-ros train` options (data, --out and the teacher are added by run_one)
TRAINERS: dict[str, list[str]] = {
    "baseline-trainable": ["--method", "baseline-trainable", "--epochs", "2", "--places-per-batch", "32"],
    "scicevpr-teacher": ["--method", "scicevpr-teacher", "--tiny", TINY, "--epochs", "2", "--steps-per-epoch", "40",
                         "--places-per-batch", "16", "--lr", "1e-3"],
    "scicevpr": ["--method", "scicevpr", "--tiny", TINY, "--epochs", "1", "--steps-per-epoch", "40",
                 "--places-per-batch", "16", "--lr", "1e-3"],
    "mutualvpr": ["--method", "mutualvpr", "--tiny", TINY, "--input-size", "112", "112", "--epochs", "2",
                  "--steps-per-epoch", "60", "--places-per-batch", "32", "--view-classes", "1", "--lr", "1e-3"],
    "fol": ["--method", "fol", "--tiny", TINY, "--input-size", "224", "224", "--epochs", "2", "--steps-per-epoch", "25",
            "--places-per-batch", "8", "--lr", "3e-4"],
}


def run_one(name: str, data: Path, out: Path, places, val) -> tuple[float, float, float]:
    import torch

    from vpr_ros.cli import build_parser
    from vpr_ros.training.base import DataConfig, seed_everything
    from vpr_ros.training.datasets import require_images_per_place
    from vpr_ros.training.loop import LoopConfig, train
    from vpr_ros.training.run import RECIPES, build_trainer

    argv = ["train", *TRAINERS[name], "--traversal", str(data / "summer"), "--traversal", str(data / "winter"),
            "--images-per-place", "1" if name == "mutualvpr" else "2", "--workers", "0", "--out", str(out / name)]
    if name == "scicevpr":
        argv += ["--teacher", str(out / "scicevpr-teacher" / "best_model.pth")]
    a = build_parser().parse_args(argv)
    recipe = RECIPES[a.method]
    seed_everything(a.seed)
    began = time.monotonic()
    train_set = require_images_per_place(places, a.images_per_place)
    trainer = build_trainer(a, recipe, train_set, torch.device("cpu"))
    cfg = LoopConfig(a.out, a.epochs, DataConfig(a.places_per_batch, a.images_per_place, a.steps_per_epoch, a.seed))
    history = train(trainer, train_set, val, cfg)
    return history.r1_before, history.r1[-1], (time.monotonic() - began) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "nordland_trimmed")
    parser.add_argument("--only", action="append", choices=list(TRAINERS), help="run only these trainers (repeat)")
    parser.add_argument("--out", type=Path, help="run directories (default: a temporary directory)")
    args = parser.parse_args()
    if not (args.data / "summer").is_dir():
        raise SystemExit(f"no Nordland images under {args.data}: pass --data pointing at nordland_trimmed")

    import torch

    from vpr_ros.models.load import load_model
    from vpr_ros.training.datasets import traversals
    from vpr_ros.training.validation import recall_at_1, validation_set

    out = args.out or Path(tempfile.mkdtemp(prefix="vpr_train_bench_"))
    places = traversals([args.data / "summer", args.data / "winter"])
    train_places = places.subset(range(TRAIN_PLACES))
    val = validation_set(places.subset(range(TRAIN_PLACES, len(places))), route_tolerance=1)
    baseline, spec, _ = load_model("baseline")
    print(f"# {len(train_places)} training places, {len(val.queries)} unseen winter queries; runs in {out}", flush=True)
    print(f"baseline_r1={recall_at_1(baseline, val, spec, torch.device('cpu')):.4f}", flush=True)
    lines = []
    for name in args.only or TRAINERS:
        before, after, minutes = run_one(name, args.data, out, train_places, val)
        lines.append(f"trainer={name} r1_before={before:.4f} r1_after={after:.4f} minutes={minutes:.1f}")
        print(f"# {lines[-1]}", flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
