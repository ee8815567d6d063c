"""
`vpr-ros train`.

Every trainer runs on real images, checkpoints load through load_official, resume after SIGKILL
continues exactly, bags and the public layouts read as places, and bad input is refused before
training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import shared_path
from vpr_ros.cli import main
from vpr_ros.errors import DatasetError
from vpr_ros.models.checkpoints import load_official
from vpr_ros.training import datasets
from vpr_ros.training.checkpoint import BEST, EXTRA_KEY, LAST

PLACES = 16
SMALL = [
    "--images-per-place",
    "2",
    "--places-per-batch",
    "4",
    "--steps-per-epoch",
    "2",
    "--workers",
    "0",
    "--val-fraction",
    "0.25",
]
TINY = ["--tiny", "32x2"]
GSV_KEYS = {
    "epoch_num",
    "model_state_dict",
    "optimizer_state_dict",
    "recalls",
    "best_r5",
    "not_improved_num",
}
COSPLACE_KEYS = {
    "epoch_num",
    "model_state_dict",
    "optimizer_state_dict",
    "classifiers_state_dict",
    "optimizers_state_dict",
    "best_val_recall1",
}


@pytest.fixture(scope="module")
def nordland(tmp_path_factory) -> list[str]:
    """
    Link the first PLACES Nordland places as two aligned traversal folders.

    Links to the shared images.
    """
    source = shared_path("data", "nordland_trimmed")
    root = tmp_path_factory.mktemp("nordland")
    names = sorted(p.name for p in (source / "summer").iterdir())[:PLACES]
    for season in ("summer", "winter"):
        (root / season).mkdir()
        for name in names:
            (root / season / name).symlink_to(source / season / name)
    return ["--traversal", str(root / "summer"), "--traversal", str(root / "winter")]


def _train(*args: str) -> int:
    return main(["train", *args])


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# method -> (extra options, builder of a fresh model of the same shape)
def _fresh(method: str):
    from vpr_ros.models.scicevpr import SciceVPR, SuperCricaVPR
    from vpr_ros.training.backbones import parse_tiny
    from vpr_ros.training.fol import build_fol
    from vpr_ros.training.learned_grid import build_learned_grid
    from vpr_ros.training.mutualvpr import build_mutualvpr
    from vpr_ros.training.scicevpr import build_scicevpr

    tiny = parse_tiny("32x2")
    return {
        "baseline-trainable": lambda: build_learned_grid(64),
        "scicevpr-teacher": lambda: build_scicevpr(SuperCricaVPR, tiny),
        "scicevpr": lambda: build_scicevpr(SciceVPR, tiny),
        "mutualvpr": lambda: build_mutualvpr(tiny),
        "fol": lambda: build_fol(tiny),
    }[method]()


CASES = {
    "baseline-trainable": [],
    "scicevpr-teacher": TINY,
    "mutualvpr": [*TINY, "--input-size", "56", "56", "--view-classes", "1", "--groups", "2"],
    "fol": [*TINY, "--input-size", "224", "224"],
}


@pytest.fixture(scope="module")
def runs(nordland, tmp_path_factory) -> dict[str, Path]:
    """One short epoch of every trainer (the student learns from the teacher's run)."""
    out = {}
    for method, extra in CASES.items():
        out[method] = tmp_path_factory.mktemp(method)
        assert (
            _train(
                "--method",
                method,
                *extra,
                *nordland,
                *SMALL,
                "--epochs",
                "1",
                "--out",
                str(out[method]),
            )
            == 0
        )
    out["scicevpr"] = tmp_path_factory.mktemp("scicevpr")
    assert (
        _train(
            "--method",
            "scicevpr",
            *TINY,
            "--teacher",
            str(out["scicevpr-teacher"] / BEST),
            *nordland,
            *SMALL,
            "--epochs",
            "1",
            "--out",
            str(out["scicevpr"]),
        )
        == 0
    )
    return out


@pytest.mark.slow  # trains
@pytest.mark.parametrize("method", [*CASES, "scicevpr"])
def test_checkpoints_are_official_and_load(runs, method):
    run = runs[method]
    checkpoint = _checkpoint(run / LAST)
    assert set(checkpoint) - {EXTRA_KEY} == (COSPLACE_KEYS if method == "mutualvpr" else GSV_KEYS)
    assert all(
        k.startswith("module.") for k in checkpoint["model_state_dict"]
    )  # DataParallel keys, as the authors save
    history = json.loads((run / "history.json").read_text())
    assert (
        len(history["r1"]) == 1
        and 0.0 <= history["r1"][0] <= 1.0
        and np.isfinite(history["loss"][0])
    )
    assert (run / "training.png").read_bytes()[:4] == b"\x89PNG"
    for path in (
        run / LAST,
        run / BEST,
    ):  # MutualVPR's best_model.pth is the bare state_dict, like train.py's
        model = load_official(_fresh(method), path).eval()
        for key, value in model.state_dict().items():
            assert torch.equal(value, checkpoint["model_state_dict"]["module." + key]), key


@pytest.mark.slow  # trains
def test_student_keeps_the_teachers_backbone_and_fusion_frozen(runs):
    teacher = _checkpoint(runs["scicevpr-teacher"] / BEST)["model_state_dict"]
    student = _checkpoint(runs["scicevpr"] / LAST)["model_state_dict"]
    shared = [k for k in student if k.startswith(("module.backbone.", "module.conv."))]
    assert shared and all(torch.equal(student[k], teacher[k]) for k in shared)
    assert (
        "module.encoder.layers.1.norm1.weight" in teacher
        and "module.encoder.layers.1.norm1.weight" not in student
    )


@pytest.mark.slow  # trains
def test_default_trunk_stays_imagenet_except_the_tuned_block(runs):
    from vpr_ros.training.learned_grid import build_learned_grid

    fresh = build_learned_grid(64).state_dict()
    trained = _checkpoint(runs["baseline-trainable"] / LAST)["model_state_dict"]
    assert torch.equal(
        trained["module.trunk._blocks.0._depthwise_conv.weight"],
        fresh["trunk._blocks.0._depthwise_conv.weight"],
    )
    assert not torch.equal(
        trained["module.trunk._blocks.4._depthwise_conv.weight"],
        fresh["trunk._blocks.4._depthwise_conv.weight"],
    )


def test_view_classes_recluster_into_the_visible_groups():
    from vpr_ros.training.mutualvpr import ViewClasses

    places = datasets.PlaceSet(
        [np.zeros((4, 4, 3), np.uint8)] * 6, [np.arange(6)], None, ordered=False, source="test"
    )
    classes = ViewClasses(places, np.array([0]), per_cell=2)
    assert [c.tolist() for c in classes.classes[0]] == [[0, 2, 4], [1, 3, 5]]  # round-robin start
    descriptors = np.array(
        [[1, 0], [1, 0.01], [0, 1], [0.01, 1], [1, 0.02], [0.02, 1]], np.float32
    )
    assert classes.recluster(0, descriptors, np.arange(6), seed=0)
    assert sorted(sorted(c.tolist()) for c in classes.classes[0]) == [[0, 1, 4], [2, 3, 5]]


def _run_args(nordland, out: Path, epochs: int) -> list[str]:
    return [
        "--method",
        "baseline-trainable",
        *nordland,
        *SMALL,
        "--epochs",
        str(epochs),
        "--out",
        str(out),
    ]


@pytest.mark.slow  # trains
def test_sigkill_then_resume_matches_an_uninterrupted_run(nordland, tmp_path):
    epochs = 5
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vpr_ros.cli",
            "train",
            *_run_args(nordland, tmp_path / "killed", epochs),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "killed" / LAST).exists():
            assert (
                proc.poll() is None and time.monotonic() < deadline
            ), "training ended or stalled before its first checkpoint"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done_at_kill = _checkpoint(tmp_path / "killed" / LAST)[EXTRA_KEY]["epochs_done"]
    assert 1 <= done_at_kill < epochs
    assert not list(
        (tmp_path / "killed").glob(".*partial")
    )  # no half-written checkpoint left behind
    assert _train(*_run_args(nordland, tmp_path / "killed", epochs), "--resume") == 0
    assert _train(*_run_args(nordland, tmp_path / "straight", epochs)) == 0
    resumed, straight = (_checkpoint(tmp_path / run / LAST) for run in ("killed", "straight"))
    assert resumed[EXTRA_KEY]["epochs_done"] == straight[EXTRA_KEY]["epochs_done"] == epochs
    for key, value in straight["model_state_dict"].items():
        assert torch.equal(resumed["model_state_dict"][key], value), key
    assert resumed[EXTRA_KEY]["history"]["r1"] == straight[EXTRA_KEY]["history"]["r1"]


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from vpr_harness.demo.route import write_demo_bags

    return write_demo_bags(
        tmp_path_factory.mktemp("bags"), frames=40, storage="mcap", compressed=True
    )


@pytest.mark.slow  # trains
def test_trains_from_two_bags_of_one_site(bags, tmp_path):
    from vpr_harness.demo.route import COMPRESSED_CAMERA_TOPIC, GPS_TOPIC

    places = datasets.rosbags(bags, COMPRESSED_CAMERA_TOPIC, GPS_TOPIC)
    sources = [len(p) for p in places.places]
    assert (
        len(places) >= 8 and max(sources) >= 2 and places.ordered and places.place_xy is not None
    )
    centres = places.place_xy
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[
        np.triu_indices(len(centres), 1)
    ]
    assert gaps.min() >= datasets.DEFAULT_SPACING_M  # place centres keep the documented spacing
    assert (
        _train(
            "--method",
            "baseline-trainable",
            "--bag",
            str(bags[0]),
            "--bag",
            str(bags[1]),
            "--image-topic",
            COMPRESSED_CAMERA_TOPIC,
            "--pose-topic",
            GPS_TOPIC,
            *SMALL,
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
        )
        == 0
    )


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8))


def test_gsv_cities_and_vpr_folder_layouts(tmp_path):
    for place in range(3):
        for year in (2015, 2017, 2019):
            _jpeg(
                tmp_path
                / "gsv"
                / "Images"
                / "Boston"
                / f"Boston_{place:07d}_{year}_05_090_42.35_-71.05_ab_c-{place}.jpg"
            )
    gsv = datasets.gsv_cities(tmp_path / "gsv")
    assert len(gsv) == 3 and gsv.images_per_place().tolist() == [3, 3, 3]
    assert (
        "2019" in gsv.images[gsv.places[0][0]].name
    )  # most recent first, as the official loader orders them
    for east in (0.0, 2.0, 40.0, 41.0, 90.0):
        _jpeg(
            tmp_path
            / "vpr"
            / "database"
            / f"@{500000 + east:.2f}@{4000000:.2f}@33@T@@@@@@@@@@@.jpg"
        )
    vpr = datasets.vpr_folder(tmp_path / "vpr")
    assert sorted(len(p) for p in vpr.places) == [
        1,
        2,
        2,
    ]  # 0 and 2 m share a place, as do 40 and 41; 90 stands alone
    with pytest.raises(DatasetError, match="along a route"):
        datasets.merge_consecutive(vpr, 2)
    route = datasets.PlaceSet(
        [b""] * 10,
        [np.array([2 * i, 2 * i + 1]) for i in range(5)],
        None,
        ordered=True,
        source="t",
    )
    assert [p.tolist() for p in datasets.merge_consecutive(route, 2).places] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]


@pytest.mark.slow  # trains
def test_bad_input_is_refused_before_training(nordland, runs, bags, tmp_path, capsys):
    from vpr_harness.demo.route import COMPRESSED_CAMERA_TOPIC, GPS_TOPIC

    (tmp_path / "empty").mkdir()
    _jpeg(tmp_path / "unnamed" / "frame_0001.jpg")
    cases = [
        (["--method", "baseline-trainable", "--images", str(tmp_path / "empty")], "no images"),
        (
            ["--method", "baseline-trainable", "--images", str(tmp_path / "unnamed")],
            "named in the VPR layout",
        ),
        (
            ["--method", "baseline-trainable", *nordland, "--images-per-place", "4"],
            "--images-per-place 2",
        ),
        (
            [
                "--method",
                "baseline-trainable",
                "--bag",
                str(bags[0]),
                "--image-topic",
                "/front/image",
                "--pose-topic",
                GPS_TOPIC,
            ],
            "has no topic /front/image",
        ),
        (
            [
                "--method",
                "baseline-trainable",
                "--bag",
                str(bags[0]),
                "--image-topic",
                COMPRESSED_CAMERA_TOPIC,
            ],
            "needs --pose-topic",
        ),
        (
            [
                "--method",
                "scicevpr-teacher",
                *TINY,
                *nordland,
                "--init-weights",
                str(runs["mutualvpr"] / LAST),
            ],
            "do not fit",
        ),
        (["--method", "fol", *TINY, *nordland, "--resume"], "no last_checkpoint.pth"),
        (["--method", "scicevpr-teacher", *nordland], "--backbone-weights"),
        (["--method", "scicevpr", *TINY, *nordland], "--teacher"),
        (
            ["--method", "scicevpr", *TINY, *nordland, "--teacher", str(runs["scicevpr"] / LAST)],
            "do not fit",
        ),
        (
            ["--method", "baseline-trainable", *nordland, "--places-per-batch", "64"],
            "--places-per-batch 12",
        ),
    ]
    if not torch.cuda.is_available():
        cases.append(
            (["--method", "baseline-trainable", *nordland, "--device", "cuda"], "no CUDA GPU")
        )
    for args, expected in cases:
        out = tmp_path / "out"
        assert _train(*SMALL, *args, "--out", str(out)) == 2, args
        assert expected in capsys.readouterr().err, args
        assert not (out / LAST).exists(), args
    # a run directory of another method is not resumed as this one
    assert (
        _train(
            "--method",
            "fol",
            *TINY,
            *nordland,
            *SMALL,
            "--resume",
            "--out",
            str(runs["mutualvpr"]),
        )
        == 2
    )
    assert "is a checkpoint of 'mutualvpr'" in capsys.readouterr().err
    # nor silently overwritten
    assert (
        _train(
            "--method",
            "baseline-trainable",
            *nordland,
            *SMALL,
            "--out",
            str(runs["baseline-trainable"]),
        )
        == 2
    )
    assert "--resume" in capsys.readouterr().err


def test_train_help():
    r = subprocess.run(
        [sys.executable, "-m", "vpr_ros.cli", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "--traversal" in r.stdout and "--resume" in r.stdout


@pytest.mark.slow  # trains
def test_shipped_default_file_is_what_training_changed(runs, tmp_path, monkeypatch):
    from vpr_ros.models import learned_grid
    from vpr_ros.training.learned_grid import build_learned_grid, export_trained_tensors

    written = export_trained_tensors(
        runs["baseline-trainable"] / BEST, tmp_path / "baseline_trained.pt"
    )
    assert set(written) == {
        k for k in written if k.startswith(("head.", "trunk._blocks.4."))
    }  # head + the tuned block only
    monkeypatch.setattr(learned_grid, "TRAINED_WEIGHTS", tmp_path / "baseline_trained.pt")
    shipped = learned_grid.baseline_trained()
    shipped.load_state_dict(learned_grid.trained_state_dict(shipped), strict=True)
    trained = load_official(build_learned_grid(64), runs["baseline-trainable"] / BEST)
    x = torch.randn(2, 3, 64, 128)
    torch.testing.assert_close(shipped.eval()(x), trained.eval()(x), rtol=0, atol=0)


@pytest.mark.slow  # builds three full-size models
def test_full_size_checkpoints_load_as_the_registry_presets(tmp_path):
    """
    What `vpr-ros train` saves for the full-size models is what build-map/eval load.

    That is, `build-map/eval --model P --weights F`.
    """
    from vpr_ros.models.load import load_model
    from vpr_ros.models.scicevpr import SciceVPR
    from vpr_ros.training.checkpoint import dataparallel_state_dict, save_atomic
    from vpr_ros.training.fol import build_fol
    from vpr_ros.training.mutualvpr import build_mutualvpr
    from vpr_ros.training.run import RECIPES
    from vpr_ros.training.scicevpr import build_scicevpr

    for method, build in (
        ("scicevpr", lambda: build_scicevpr(SciceVPR, "vitb14")),
        ("mutualvpr", lambda: build_mutualvpr("vitb14")),
        ("fol", lambda: build_fol("vitb14")),
    ):
        model = build()
        path = tmp_path / f"{method}.pth"
        save_atomic({"epoch_num": 0, "model_state_dict": dataparallel_state_dict(model)}, path)
        loaded, spec, _ = load_model(RECIPES[method].preset, path)
        assert spec.name == RECIPES[method].preset
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        del model, loaded
