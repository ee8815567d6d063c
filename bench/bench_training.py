"""
Proof that every trainer learns, on this CPU.

Nordland places 1-2500 train, 2501-3576 (never seen) evaluate.

    .venv/bin/python bench/bench_training.py [--data ../shared/data/nordland_trimmed] [--only fol]
    [--out DIR]
        [--export-default vpr_ros/models/weights/baseline_trained.pt]

Evaluation: winter queries against the summer images of places 2501-3576, right within one
place (the shared data's tolerance 1, about 10 original frames). Each trainer runs through the
same path as `vpr-ros train` (options parsed by its parser) with a small configuration so that
all of them finish in minutes:
- the trainable default: the shipped ImageNet trunk, a learned 64-channel projection, last trunk
  block tuned;
- SciceVPR teacher then student, MutualVPR and FoL on a DINOv2 of 4 blocks, 64 wide, from random
  weights (no trained DINOv2 weights exist here), at learning rates raised for minutes-long runs.
Prints `baseline_r1=...` (the untrained default `baseline` on the same queries, for comparison),
after the trainable default `default_check` lines (baseline vs trained on data no trainer saw: the
synthetic demo route, Recall@1 within 10 m, and the Tokyo night query's rank among its day image
and ten Gardens Point images), and one line per trainer: `trainer=NAME r1_before=A r1_after=B
minutes=M`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


TRAIN_PLACES = 2500
TINY = "64x4"
CHANNELS = 64  # the trainable default's learned channels per grid cell (its --channels default)

# name -> `vpr-ros train` options (data, --out and the teacher are added by run_one)
TRAINERS: dict[str, list[str]] = {
    "baseline-trainable": [
        "--method",
        "baseline-trainable",
        "--epochs",
        "2",
        "--places-per-batch",
        "32",
    ],
    "scicevpr-teacher": [
        "--method",
        "scicevpr-teacher",
        "--tiny",
        TINY,
        "--epochs",
        "2",
        "--steps-per-epoch",
        "40",
        "--places-per-batch",
        "16",
        "--lr",
        "1e-3",
    ],
    "scicevpr": [
        "--method",
        "scicevpr",
        "--tiny",
        TINY,
        "--epochs",
        "1",
        "--steps-per-epoch",
        "40",
        "--places-per-batch",
        "16",
        "--lr",
        "1e-3",
    ],
    # Cells of 5 consecutive places (10 images): a single Nordland place has 2, too few for a class
    # of CosFace.
    "mutualvpr": [
        "--method",
        "mutualvpr",
        "--tiny",
        TINY,
        "--input-size",
        "112",
        "112",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "80",
        "--places-per-batch",
        "32",
        "--merge-places",
        "5",
        "--view-classes",
        "1",
        "--lr",
        "1e-3",
    ],
    "fol": [
        "--method",
        "fol",
        "--tiny",
        TINY,
        "--input-size",
        "224",
        "224",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "25",
        "--places-per-batch",
        "8",
        "--lr",
        "3e-4",
    ],
}


def run_one(name: str, data: Path, out: Path, places, val) -> tuple[float, float, float]:
    import torch

    from vpr_ros.cli import build_parser
    from vpr_ros.training.base import DataConfig, seed_everything
    from vpr_ros.training.datasets import merge_consecutive, require_images_per_place
    from vpr_ros.training.loop import LoopConfig, train
    from vpr_ros.training.run import RECIPES, build_trainer

    argv = [
        "train",
        *TRAINERS[name],
        "--traversal",
        str(data / "summer"),
        "--traversal",
        str(data / "winter"),
        "--images-per-place",
        "1" if name == "mutualvpr" else "2",
        "--workers",
        "0",
        "--out",
        str(out / name),
    ]
    if name == "scicevpr":
        argv += ["--teacher", str(out / "scicevpr-teacher" / "best_model.pth")]
    args = build_parser().parse_args(argv)
    recipe = RECIPES[args.method]
    seed_everything(args.seed)
    began = time.monotonic()
    train_set = require_images_per_place(
        merge_consecutive(places, args.merge_places), args.images_per_place
    )
    trainer = build_trainer(args, recipe, train_set, torch.device("cpu"))
    cfg = LoopConfig(
        args.out,
        args.epochs,
        DataConfig(args.places_per_batch, args.images_per_place, args.steps_per_epoch, args.seed),
    )
    history = train(trainer, train_set, val, cfg)
    return history.r1_before, history.r1[-1], (time.monotonic() - began) / 60


def _describe_arrays(model, spec, images):
    import numpy as np
    import torch

    from vpr_ros.training.datasets import PlaceSet
    from vpr_ros.training.validation import describe

    places = PlaceSet(list(images), [], None, ordered=False, source="bench")
    return describe(model, places, np.arange(len(images)), spec, torch.device("cpu"))


def default_model_checks(models: dict, shared: Path, frames: int = 200) -> list[str]:
    """
    Recall@1 of each (model, spec) on data no trainer saw.

    The synthetic demo route and the Tokyo day/night pair.
    """
    import numpy as np

    from vpr_harness.demo.route import CAMERA_TOPIC, GPS_TOPIC, write_demo_bags
    from vpr_ros.evaluation.recall import positives_by_distance, rank_database, recall_at_n
    from vpr_ros.imaging import read_rgb
    from vpr_ros.maps.sources import BagSource

    map_bag, query_bag = write_demo_bags(
        Path(tempfile.mkdtemp(prefix="vpr_train_bench_route_")), frames=frames
    )
    db = [
        (f.image, f.position[:2])
        for f in BagSource([map_bag], CAMERA_TOPIC, GPS_TOPIC, min_distance_m=2.0)
    ]
    q = [(f.image, f.position[:2]) for f in BagSource([query_bag], CAMERA_TOPIC, GPS_TOPIC)]
    db_xy, q_xy = np.array([xy for _, xy in db]), np.array([xy for _, xy in q])
    positives = positives_by_distance(
        q_xy - db_xy.mean(0), db_xy - db_xy.mean(0), 10.0
    )  # the demo's threshold
    # Tokyo: the night query against its day image among the ten Gardens Point day images
    # (distractors).
    tokyo = [
        read_rgb(shared / "tokyo_pair" / "query.jpg"),
        read_rgb(shared / "tokyo_pair" / "database.png"),
    ]
    distractors = [
        read_rgb(p) for p in sorted((shared / "gardens_point_sample" / "day").glob("*.jpg"))
    ]
    lines = []
    for name, (model, spec) in models.items():
        r1 = recall_at_n(
            rank_database(
                _describe_arrays(model, spec, [im for im, _ in q]),
                _describe_arrays(model, spec, [im for im, _ in db]),
                1,
            ),
            positives,
            (1,),
        )[1]
        d = _describe_arrays(model, spec, tokyo + distractors)
        rank = int((d[2:] @ d[0] > d[1] @ d[0]).sum()) + 1
        lines.append(
            f"default_check model={name} demo_route_r1={r1:.4f} "
            f"tokyo_rank={rank}/{len(distractors) + 1}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "nordland_trimmed",
    )
    parser.add_argument(
        "--only", action="append", choices=list(TRAINERS), help="run only these trainers (repeat)"
    )
    parser.add_argument(
        "--out", type=Path, help="run directories (default: a temporary directory)"
    )
    parser.add_argument(
        "--export-default",
        type=Path,
        metavar="FILE",
        help="write the trained default's changed tensors "
        "here (vpr_ros/models/weights/baseline_trained.pt is made this way)",
    )
    args = parser.parse_args()
    if not (args.data / "summer").is_dir():
        raise SystemExit(
            f"no Nordland images under {args.data}: pass --data pointing at nordland_trimmed"
        )

    import torch

    from vpr_ros.models.load import load_model
    from vpr_ros.training.datasets import traversals
    from vpr_ros.training.validation import recall_at_1, validation_set

    out = args.out or Path(tempfile.mkdtemp(prefix="vpr_train_bench_"))
    places = traversals([args.data / "summer", args.data / "winter"])
    train_places = places.subset(range(TRAIN_PLACES))
    val = validation_set(places.subset(range(TRAIN_PLACES, len(places))), route_tolerance=1)
    baseline, spec, _ = load_model("baseline")
    print(
        f"# {len(train_places)} training places, {len(val.queries)} unseen winter queries; runs "
        f"in {out}",
        flush=True,
    )
    print(f"baseline_r1={recall_at_1(baseline, val, spec, torch.device('cpu')):.4f}", flush=True)
    lines = []
    for name in args.only or TRAINERS:
        before, after, minutes = run_one(name, args.data, out, train_places, val)
        lines.append(
            f"trainer={name} r1_before={before:.4f} r1_after={after:.4f} minutes={minutes:.1f}"
        )
        print(f"# {lines[-1]}", flush=True)
        if name == "baseline-trainable":
            from vpr_ros.models.checkpoints import load_official
            from vpr_ros.training.learned_grid import build_learned_grid, learned_grid_spec

            # The last epoch, not the best: the best is chosen on these very queries.
            trained = load_official(
                build_learned_grid(CHANNELS), out / name / "last_checkpoint.pth"
            )
            checks = default_model_checks(
                {"baseline": (baseline, spec), name: (trained, learned_grid_spec(CHANNELS))},
                args.data.parent,
            )
            print("\n".join(checks), flush=True)
            if args.export_default:
                from vpr_ros.training.learned_grid import export_trained_tensors

                sizes = export_trained_tensors(
                    out / name / "last_checkpoint.pth", args.export_default
                )
                print(
                    f"# wrote {args.export_default}: {len(sizes)} tensors, {sum(sizes.values())} "
                    "values",
                    flush=True,
                )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
