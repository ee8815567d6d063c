"""`vpr-ros train`: the trainable default, SciceVPR, MutualVPR or FoL on your data."""

from __future__ import annotations

import argparse
from pathlib import Path

from vpr_ros.cli import options
from vpr_ros.training.run import RECIPES


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("train",
                            help="train a model on GSV-Cities, VPR-layout folders, aligned "
                            "traversals or your rosbags",
                            description="Train the trainable default (CPU, minutes), SciceVPR "
                            "(teacher, then student), MutualVPR or FoL. Validates Recall@1 on "
                            "held-apart places each epoch; writes checkpoints in the authors' "
                            "format (resumable with --resume) and training.png.")
    parser.add_argument("--method", required=True, choices=list(RECIPES),
                        help="what to train (scicevpr needs a teacher from scicevpr-teacher)")
    parser.add_argument("--out", required=True, type=Path,
                        help="run directory: checkpoints, training.png, history.json")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint")
    d = parser.add_argument_group("data (one layout)")
    d.add_argument("--gsv-cities", type=Path, help="GSV-Cities root (Images/<City>/...)")
    d.add_argument("--images", type=Path,
                   help="folder of images named in the VPR layout @utm_east@utm_north@...@.jpg")
    d.add_argument("--traversal", action="append", type=Path,
                   help="aligned traversal folder (same file name = same place); repeat")
    options.add_bag_args(d, "rosbag2 recording of the site; repeat for each traversal")
    d.add_argument("--frame-spacing-m", type=float, default=1.0,
                   help="bags: read a frame every this many metres (default: %(default)s)")
    d.add_argument("--place-spacing-m", type=float, default=15.0,
                   help="bags/VPR folder: place centres at least this far apart (default: "
                   "%(default)s)")
    d.add_argument("--place-radius-m", type=float, default=5.0,
                   help="bags/VPR folder: images within this of a centre form its place "
                   "(default: %(default)s)")
    d.add_argument("--merge-places", type=int, default=1,
                   help="route data: train on every N consecutive places as one (mutualvpr's "
                   "cells need several images; validation keeps single places) (default: "
                   "%(default)s)")
    d.add_argument("--val-fraction", type=float, default=0.2,
                   help="last share of places held apart for validation (default: %(default)s)")
    d.add_argument("--val-radius-m", type=float, default=25.0,
                   help="validation: right within this many metres, where places have positions "
                   "(default: %(default)s)")
    m = parser.add_argument_group("model")
    m.add_argument("--arch", default="vitb14", choices=["vits14", "vitb14", "vitl14"],
                   help="DINOv2 size (default: %(default)s)")
    m.add_argument("--tiny", metavar="WIDTHxDEPTH",
                   help="a small random DINOv2 instead (e.g. 64x4): proofs and tests only")
    m.add_argument("--backbone-weights", type=Path,
                   help="bare DINOv2 pretrain file (dinov2_vitb14_pretrain.pth)")
    m.add_argument("--init-weights", type=Path,
                   help="start from this checkpoint of the same model (official or ours)")
    m.add_argument("--random-init", action="store_true",
                   help="allow a full-size DINOv2 from random weights (tests only)")
    m.add_argument("--teacher", type=Path,
                   help="scicevpr: the teacher checkpoint (best_model.pth of a scicevpr-teacher "
                   "run)")
    m.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="mutualvpr/fol input size (default: the recipe's)")
    m.add_argument("--channels", type=int, default=64,
                   help="baseline-trainable: learned channels per grid cell (default: "
                   "%(default)s)")
    m.add_argument("--trainable-blocks", type=int,
                   help="fol: last DINOv2 blocks that train (default 4); baseline-trainable: "
                   "last trunk blocks fine-tuned (default 1)")
    t = parser.add_argument_group("training (defaults: the method's recipe)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--places-per-batch", type=int,
                   help="places per batch (mutualvpr: images per batch)")
    t.add_argument("--images-per-place", type=int)
    t.add_argument("--steps-per-epoch", type=int,
                   help="batches per epoch (default: every place once)")
    t.add_argument("--lr", type=float, help="learning rate of the model (default: the recipe's)")
    t.add_argument("--groups", type=int, default=1,
                   help="mutualvpr: groups of cells, one trained per epoch (default: %(default)s)")
    t.add_argument("--view-classes", type=int, default=6,
                   help="mutualvpr: K-means view classes per cell (default: %(default)s)")
    t.add_argument("--patience", type=int, default=0,
                   help="stop after this many epochs without better R@1 (default: never)")
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="default: %(default)s; cuda trains with mixed precision")
    t.add_argument("--workers", type=int, default=2,
                   help="image-loading processes (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0)
    return parser


def run(args: argparse.Namespace) -> int:
    from vpr_ros.training.run import run_training

    return run_training(args)
