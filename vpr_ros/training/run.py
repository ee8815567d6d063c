"""
`vpr-ros train`: options, checks of the input before anything trains, and the run.

Everything a user can get wrong (data, sizes, weights, a checkpoint of another model) is
checked before the first batch, and refused with the problem and the fix.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from vpr_ros.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

METHODS = ("baseline-trainable", "scicevpr-teacher", "scicevpr", "mutualvpr", "fol")


@dataclass(frozen=True)
class Recipe:
    """
    The official defaults of a method (the GSV-Cities / CosPlace recipes).

    Options override them.
    """

    epochs: int
    places_per_batch: int
    images_per_place: int
    input_size: tuple[int, int]
    preset: str  # registry preset whose checkpoints these are ('' when none)


RECIPES = {
    "baseline-trainable": Recipe(5, 32, 4, (64, 128), ""),
    "scicevpr-teacher": Recipe(10, 72, 4, (224, 224), "scicevpr-teacher-b"),
    "scicevpr": Recipe(1, 72, 4, (224, 224), "scicevpr-b"),
    "mutualvpr": Recipe(
        10, 32, 1, (504, 504), "mutualvpr-b"
    ),  # places_per_batch: images per batch
    "fol": Recipe(8, 60, 4, (322, 322), "fol-b"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        required=True,
        choices=METHODS,
        help="what to train (scicevpr needs a teacher from scicevpr-teacher)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="run directory: checkpoints, training.png, history.json",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    d = p.add_argument_group("data (one layout)")
    d.add_argument("--gsv-cities", type=Path, help="GSV-Cities root (Images/<City>/...)")
    d.add_argument(
        "--images",
        type=Path,
        help="folder of images named in the VPR layout @utm_east@utm_north@...@.jpg",
    )
    d.add_argument(
        "--traversal",
        action="append",
        type=Path,
        help="aligned traversal folder (same file name = same place); repeat",
    )
    d.add_argument(
        "--bag",
        action="append",
        type=Path,
        help="rosbag2 recording of the site; repeat for each traversal",
    )
    d.add_argument("--image-topic", help="image topic in the bags")
    d.add_argument("--pose-topic", help="NavSatFix / Odometry / PoseStamped topic in the bags")
    d.add_argument(
        "--frame-spacing-m",
        type=float,
        default=1.0,
        help="bags: read a frame every this many metres (default: %(default)s)",
    )
    d.add_argument(
        "--place-spacing-m",
        type=float,
        default=15.0,
        help="bags/VPR folder: place centres at least this far apart (default: %(default)s)",
    )
    d.add_argument(
        "--place-radius-m",
        type=float,
        default=5.0,
        help="bags/VPR folder: images within this of a centre form its place (default: "
             "%(default)s)",
    )
    d.add_argument(
        "--merge-places",
        type=int,
        default=1,
        help="route data: train on every N consecutive places as one "
        "(mutualvpr's cells need several images; validation keeps single places) (default: "
        "%(default)s)",
    )
    d.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="last share of places held apart for validation (default: %(default)s)",
    )
    d.add_argument(
        "--val-radius-m",
        type=float,
        default=25.0,
        help="validation: right within this many metres, where places have positions (default: "
             "%(default)s)",
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--arch",
        default="vitb14",
        choices=["vits14", "vitb14", "vitl14"],
        help="DINOv2 size (default: %(default)s)",
    )
    m.add_argument(
        "--tiny",
        metavar="WIDTHxDEPTH",
        help="a small random DINOv2 instead (e.g. 64x4): proofs and tests only",
    )
    m.add_argument(
        "--backbone-weights",
        type=Path,
        help="bare DINOv2 pretrain file (dinov2_vitb14_pretrain.pth)",
    )
    m.add_argument(
        "--init-weights",
        type=Path,
        help="start from this checkpoint of the same model (official or ours)",
    )
    m.add_argument(
        "--random-init",
        action="store_true",
        help="allow a full-size DINOv2 from random weights (tests only)",
    )
    m.add_argument(
        "--teacher",
        type=Path,
        help="scicevpr: the teacher checkpoint (best_model.pth of a scicevpr-teacher run)",
    )
    m.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="mutualvpr/fol input size (default: the recipe's)",
    )
    m.add_argument(
        "--channels",
        type=int,
        default=64,
        help="baseline-trainable: learned channels per grid cell (default: %(default)s)",
    )
    m.add_argument(
        "--trainable-blocks",
        type=int,
        help="fol: last DINOv2 blocks that train (default 4); baseline-trainable: "
        "last trunk blocks fine-tuned (default 1)",
    )
    t = p.add_argument_group("training (defaults: the method's recipe)")
    t.add_argument("--epochs", type=int)
    t.add_argument(
        "--places-per-batch", type=int, help="places per batch (mutualvpr: images per batch)"
    )
    t.add_argument("--images-per-place", type=int)
    t.add_argument(
        "--steps-per-epoch", type=int, help="batches per epoch (default: every place once)"
    )
    t.add_argument("--lr", type=float, help="learning rate of the model (default: the recipe's)")
    t.add_argument(
        "--groups",
        type=int,
        default=1,
        help="mutualvpr: groups of cells, one trained per epoch (default: %(default)s)",
    )
    t.add_argument(
        "--view-classes",
        type=int,
        default=6,
        help="mutualvpr: K-means view classes per cell (default: %(default)s)",
    )
    t.add_argument(
        "--patience",
        type=int,
        default=0,
        help="stop after this many epochs without better R@1 (default: never)",
    )
    t.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="default: %(default)s; cuda trains with mixed precision",
    )
    t.add_argument(
        "--workers", type=int, default=2, help="image-loading processes (default: %(default)s)"
    )
    t.add_argument("--seed", type=int, default=0)


def load_places(a: argparse.Namespace):
    from vpr_ros.training import datasets

    given = [name for name in ("gsv_cities", "images", "traversal", "bag") if getattr(a, name)]
    if len(given) != 1:
        raise DatasetError(
            "give exactly one data layout: --gsv-cities ROOT, --images ROOT (VPR names), "
            "--traversal DIR (twice or more) or --bag DIR (with --image-topic and --pose-topic)"
        )
    if a.gsv_cities:
        return datasets.gsv_cities(a.gsv_cities)
    if a.images:
        return datasets.vpr_folder(a.images, a.place_spacing_m, a.place_radius_m)
    if a.traversal:
        return datasets.traversals(a.traversal)
    if not a.image_topic:
        raise DatasetError(
            "--bag needs --image-topic (and --pose-topic); a wrong topic lists the bag's topics"
        )
    return datasets.rosbags(
        a.bag, a.image_topic, a.pose_topic, a.place_spacing_m, a.place_radius_m, a.frame_spacing_m
    )


def _device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: torch sees no CUDA GPU here (CPU-only torch or no driver); use "
            "--device cpu"
        )
    return torch.device(name)


def build_trainer(a: argparse.Namespace, recipe: Recipe, train, device):
    """
    Build the method's model (weights in) and trainer.

    Refuses missing or foreign weights before training.
    """
    from vpr_ros.models.checkpoints import load_official
    from vpr_ros.training.backbones import (
        parse_tiny,
        put_backbone_weights,
        require_backbone_weights,
    )

    arch = parse_tiny(a.tiny) if a.tiny else a.arch
    if a.method in ("scicevpr-teacher", "mutualvpr", "fol"):
        require_backbone_weights(
            a.method, bool(a.tiny), a.backbone_weights, a.random_init or bool(a.init_weights)
        )
    input_size = tuple(a.input_size) if a.input_size else recipe.input_size
    if a.method == "baseline-trainable":
        from vpr_ros.training.learned_grid import (
            LearnedGridTrainer,
            build_learned_grid,
            learned_grid_spec,
        )

        model = build_learned_grid(a.channels)
        if a.init_weights:
            load_official(model, a.init_weights)
        blocks = 1 if a.trainable_blocks is None else a.trainable_blocks
        return LearnedGridTrainer(
            model, learned_grid_spec(a.channels), device, lr=a.lr or 1e-3, trainable_blocks=blocks
        )
    if a.method in ("scicevpr-teacher", "scicevpr"):
        from vpr_ros.models.scicevpr import SuperCricaVPR
        from vpr_ros.training import scicevpr

        if a.method == "scicevpr-teacher":
            model = scicevpr.build_scicevpr(SuperCricaVPR, arch)
            put_backbone_weights(model, a.backbone_weights)
            if a.init_weights:
                load_official(model, a.init_weights)
            return scicevpr.TeacherTrainer(
                model, scicevpr.scicevpr_spec(a.method, model), device, lr=a.lr or scicevpr.LR
            )
        if not a.teacher:
            raise ConfigError(
                "--method scicevpr (the student) learns from a teacher: train one with --method "
                "scicevpr-teacher "
                "and pass its best_model.pth with --teacher"
            )
        teacher = load_official(scicevpr.build_scicevpr(SuperCricaVPR, arch), a.teacher)
        model = scicevpr.student_from_teacher(teacher, arch)
        if a.init_weights:
            load_official(model, a.init_weights)
        return scicevpr.StudentTrainer(
            model, teacher, scicevpr.scicevpr_spec(a.method, model), device, lr=a.lr or scicevpr.LR
        )
    if a.method == "mutualvpr":
        from vpr_ros.training import mutualvpr

        model = mutualvpr.build_mutualvpr(arch)
        mutualvpr.init_adapters(model.backbone)
        put_backbone_weights(model, a.backbone_weights)
        if a.init_weights:
            load_official(model, a.init_weights)
        return mutualvpr.MutualVPRTrainer(
            model,
            mutualvpr.mutualvpr_spec(model, input_size),
            device,
            train,
            groups=a.groups,
            view_classes=a.view_classes,
            batch_size=a.places_per_batch or recipe.places_per_batch,
            model_lr=a.lr or mutualvpr.MODEL_LR,
            seed=a.seed,
        )
    from vpr_ros.training import fol

    model = fol.build_fol(arch)
    put_backbone_weights(model, a.backbone_weights)
    if a.init_weights:
        load_official(model, a.init_weights)
    return fol.FoLTrainer(
        model,
        fol.fol_spec(model, input_size),
        device,
        a.images_per_place or recipe.images_per_place,
        trainable_blocks=4 if a.trainable_blocks is None else a.trainable_blocks,
        lr=a.lr or fol.LR,
        seed=a.seed,
    )


def run_training(a: argparse.Namespace) -> int:
    from vpr_ros.training.base import DataConfig, seed_everything
    from vpr_ros.training.datasets import (
        check_readable,
        merge_consecutive,
        require_images_per_place,
        split_places,
    )
    from vpr_ros.training.loop import LoopConfig, train
    from vpr_ros.training.validation import validation_set

    recipe = RECIPES[a.method]
    per_place = a.images_per_place or recipe.images_per_place
    per_batch = a.places_per_batch or recipe.places_per_batch
    device = _device(a.device)
    seed_everything(a.seed)
    places = load_places(a)
    check_readable(places)
    train_set, val_set = split_places(places, a.val_fraction)
    train_set = require_images_per_place(merge_consecutive(train_set, a.merge_places), per_place)
    if a.method != "mutualvpr" and len(train_set) < per_batch:
        raise DatasetError(
            f"{len(train_set)} training places with {per_place} images each, fewer than a batch "
            f"of {per_batch}: "
            f"pass --places-per-batch {max(2, len(train_set))} or add data"
        )
    val = validation_set(val_set, radius_m=a.val_radius_m)
    if len(val.queries) == 0:
        raise DatasetError(
            "no held-apart place has two images, so nothing can be validated: add traversals or "
            "raise --val-fraction"
        )
    trainer = build_trainer(a, recipe, train_set, device)
    cfg = LoopConfig(
        a.out,
        a.epochs or recipe.epochs,
        DataConfig(per_batch, per_place, a.steps_per_epoch, a.seed),
        workers=a.workers,
        resume=a.resume,
        patience=a.patience,
        run_config=json.loads(
            json.dumps({k: v for k, v in vars(a).items() if k != "func"}, default=str)
        ),
    )
    log.info(
        "training %s on %s: %d places (%d held apart, %d queries), %d epochs",
        a.method,
        places.source,
        len(train_set),
        len(val_set),
        len(val.queries),
        cfg.epochs,
    )
    history = train(trainer, train_set, val, cfg)
    after = history.r1[-1] if history.r1 else float("nan")
    print(
        f"{a.method}: validation R@1 {history.r1_before:.4f} before, {after:.4f} after "
        f"{len(history.r1)} epochs; "
        f"best {history.best_r1:.4f}; checkpoints and training.png in {a.out}"
    )
    if recipe.preset and not a.tiny:
        print(
            f"use it: vpr-ros build-map --model {recipe.preset} --weights"
            f" {a.out / 'best_model.pth'} ..."
        )
    return 0
