"""
`vpr-ros train`: checks of the input before anything trains, and the run (options: cli/train).

Everything a user can get wrong (data, sizes, weights, a checkpoint of another model) is
checked before the first batch, and refused with the problem and the fix.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass

from vpr_ros.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)


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


def load_places(args: argparse.Namespace):
    from vpr_ros.training import datasets

    given = [name for name in ("gsv_cities", "images", "traversal", "bag") if getattr(args, name)]
    if len(given) != 1:
        raise DatasetError(
            "give exactly one data layout: --gsv-cities ROOT, --images ROOT (VPR names), "
            "--traversal DIR (twice or more) or --bag DIR (with --image-topic and --pose-topic)"
        )
    if args.gsv_cities:
        return datasets.gsv_cities(args.gsv_cities)
    if args.images:
        return datasets.vpr_folder(args.images, args.place_spacing_m, args.place_radius_m)
    if args.traversal:
        return datasets.traversals(args.traversal)
    if not args.image_topic:
        raise DatasetError(
            "--bag needs --image-topic (and --pose-topic); a wrong topic lists the bag's topics"
        )
    return datasets.rosbags(
        args.bag, args.image_topic, args.pose_topic, args.place_spacing_m, args.place_radius_m,
        args.frame_spacing_m,
    )


def _device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: torch sees no CUDA GPU here (CPU-only torch or no driver); use "
            "--device cpu"
        )
    return torch.device(name)


def build_trainer(args: argparse.Namespace, recipe: Recipe, train, device):
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

    arch = parse_tiny(args.tiny) if args.tiny else args.arch
    if args.method in ("scicevpr-teacher", "mutualvpr", "fol"):
        require_backbone_weights(
            args.method, bool(args.tiny), args.backbone_weights,
            args.random_init or bool(args.init_weights),
        )
    input_size = tuple(args.input_size) if args.input_size else recipe.input_size
    if args.method == "baseline-trainable":
        from vpr_ros.training.learned_grid import (
            LearnedGridTrainer,
            build_learned_grid,
            learned_grid_spec,
        )

        model = build_learned_grid(args.channels)
        if args.init_weights:
            load_official(model, args.init_weights)
        blocks = 1 if args.trainable_blocks is None else args.trainable_blocks
        return LearnedGridTrainer(
            model, learned_grid_spec(args.channels), device, lr=args.lr or 1e-3,
            trainable_blocks=blocks,
        )
    if args.method in ("scicevpr-teacher", "scicevpr"):
        from vpr_ros.models.scicevpr import SuperCricaVPR
        from vpr_ros.training import scicevpr

        if args.method == "scicevpr-teacher":
            model = scicevpr.build_scicevpr(SuperCricaVPR, arch)
            put_backbone_weights(model, args.backbone_weights)
            if args.init_weights:
                load_official(model, args.init_weights)
            return scicevpr.TeacherTrainer(
                model, scicevpr.scicevpr_spec(args.method, model), device,
                lr=args.lr or scicevpr.LR,
            )
        if not args.teacher:
            raise ConfigError(
                "--method scicevpr (the student) learns from a teacher: train one with --method "
                "scicevpr-teacher "
                "and pass its best_model.pth with --teacher"
            )
        teacher = load_official(scicevpr.build_scicevpr(SuperCricaVPR, arch), args.teacher)
        model = scicevpr.student_from_teacher(teacher, arch)
        if args.init_weights:
            load_official(model, args.init_weights)
        return scicevpr.StudentTrainer(
            model, teacher, scicevpr.scicevpr_spec(args.method, model), device,
            lr=args.lr or scicevpr.LR,
        )
    if args.method == "mutualvpr":
        from vpr_ros.training import mutualvpr

        model = mutualvpr.build_mutualvpr(arch)
        mutualvpr.init_adapters(model.backbone)
        put_backbone_weights(model, args.backbone_weights)
        if args.init_weights:
            load_official(model, args.init_weights)
        return mutualvpr.MutualVPRTrainer(
            model,
            mutualvpr.mutualvpr_spec(model, input_size),
            device,
            train,
            groups=args.groups,
            view_classes=args.view_classes,
            batch_size=args.places_per_batch or recipe.places_per_batch,
            model_lr=args.lr or mutualvpr.MODEL_LR,
            seed=args.seed,
        )
    from vpr_ros.training import fol

    model = fol.build_fol(arch)
    put_backbone_weights(model, args.backbone_weights)
    if args.init_weights:
        load_official(model, args.init_weights)
    return fol.FoLTrainer(
        model,
        fol.fol_spec(model, input_size),
        device,
        args.images_per_place or recipe.images_per_place,
        trainable_blocks=4 if args.trainable_blocks is None else args.trainable_blocks,
        lr=args.lr or fol.LR,
        seed=args.seed,
    )


def run_training(args: argparse.Namespace) -> int:
    from vpr_ros.training.base import DataConfig, seed_everything
    from vpr_ros.training.datasets import (
        check_readable,
        merge_consecutive,
        require_images_per_place,
        split_places,
    )
    from vpr_ros.training.loop import LoopConfig, train
    from vpr_ros.training.validation import validation_set

    recipe = RECIPES[args.method]
    per_place = args.images_per_place or recipe.images_per_place
    per_batch = args.places_per_batch or recipe.places_per_batch
    device = _device(args.device)
    seed_everything(args.seed)
    places = load_places(args)
    check_readable(places)
    train_set, val_set = split_places(places, args.val_fraction)
    train_set = require_images_per_place(
        merge_consecutive(train_set, args.merge_places), per_place
    )
    if args.method != "mutualvpr" and len(train_set) < per_batch:
        raise DatasetError(
            f"{len(train_set)} training places with {per_place} images each, fewer than a batch "
            f"of {per_batch}: "
            f"pass --places-per-batch {max(2, len(train_set))} or add data"
        )
    val = validation_set(val_set, radius_m=args.val_radius_m)
    if len(val.queries) == 0:
        raise DatasetError(
            "no held-apart place has two images, so nothing can be validated: add traversals or "
            "raise --val-fraction"
        )
    trainer = build_trainer(args, recipe, train_set, device)
    cfg = LoopConfig(
        args.out,
        args.epochs or recipe.epochs,
        DataConfig(per_batch, per_place, args.steps_per_epoch, args.seed),
        workers=args.workers,
        resume=args.resume,
        patience=args.patience,
        run_config=json.loads(
            json.dumps({k: v for k, v in vars(args).items() if k != "run"}, default=str)
        ),
    )
    log.info(
        "training %s on %s: %d places (%d held apart, %d queries), %d epochs",
        args.method,
        places.source,
        len(train_set),
        len(val_set),
        len(val.queries),
        cfg.epochs,
    )
    history = train(trainer, train_set, val, cfg)
    after = history.r1[-1] if history.r1 else float("nan")
    print(
        f"{args.method}: validation R@1 {history.r1_before:.4f} before, {after:.4f} after "
        f"{len(history.r1)} epochs; "
        f"best {history.best_r1:.4f}; checkpoints and training.png in {args.out}"
    )
    if recipe.preset and not args.tiny:
        print(
            f"use it: vpr-ros build-map --model {recipe.preset} --weights"
            f" {args.out / 'best_model.pth'} ..."
        )
    return 0
