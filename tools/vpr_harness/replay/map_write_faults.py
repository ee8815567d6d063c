"""
Faults while a map is written.

``kill -9`` of ``vpr-ros build-map`` in every phase, and a full disk.

A killed build must never cost the map (the previous one still loads, or the new one does) and
its leftovers must be gone after the next build; a full disk must be a clear error with the
previous map intact and nothing half-written beside it.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from vpr_ros.errors import MapError
from vpr_ros.fileio import PARTIAL
from vpr_ros.search.faiss_index import IndexConfig
from vpr_ros.maps.mapdir import (
    DESCRIPTORS_FILE,
    INDEX_FILE,
    MANIFEST,
    PLACES_FILE,
    load_map,
    write_map,
)
from vpr_ros.maps.places import Place
from vpr_harness.replay.fuzz_maps import MODEL, random_images

# -- kill -9 during build-map ---------------------------------------------------------------------
KILL_PHASES = ("extracting", DESCRIPTORS_FILE, PLACES_FILE, INDEX_FILE, MANIFEST, "swap")


def _partial_dirs(target: Path) -> list[Path]:
    return [
        p
        for p in target.parent.glob(f".{target.name}{PARTIAL}*")
        if p.is_dir() and not p.name.endswith(".old")
    ]


def debris_bytes(target: Path) -> int:
    """Bytes held by temporary entries beside ``target`` (live or dead writers')."""
    total = 0
    for p in target.parent.glob(f".{target.name}{PARTIAL}*"):
        total += (
            sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            if p.is_dir()
            else p.stat().st_size
        )
    return total


def _map_id(target: Path) -> str | None:
    """Return the id of the map at ``target`` if it loads completely, else None."""
    try:
        return load_map(target).map_id
    except MapError:
        return None


def _manifest_id(target: Path) -> str | None:
    """Return the id in ``target``'s manifest, read cheaply (no checks): polled during a build."""
    try:
        return json.loads((target / MANIFEST).read_text())["map_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _phase(target: Path, before_id: str | None, stale: set[Path]) -> str:
    """
    Where a build stands, from what it has written on disk.

    ``stale``: debris of earlier kills.
    """
    if _manifest_id(target) != before_id:
        return "swap"  # the new map is in place; the previous one was being removed
    partial = [d for d in _partial_dirs(target) if d not in stale]
    if not partial:
        return "starting"  # imports, model, listing the images: no temporary directory yet
    names = {f.name for d in partial for f in d.iterdir()}
    # the build opens its temporary directory before extracting (local features stream into
    # it), so a directory without map files yet is still extraction
    return next((name for name in reversed(KILL_PHASES[1:5]) if name in names), "extracting")


def _bytes_read(proc: subprocess.Popen) -> int:
    """Bytes the process has read so far (its /proc io counter): how far extraction got."""
    io = Path(f"/proc/{proc.pid}/io").read_text()
    return int(next(line for line in io.splitlines() if line.startswith("rchar:")).split()[1])


def _stop(proc: subprocess.Popen) -> None:
    """SIGSTOP ``proc`` and return once every thread of it has stopped."""
    proc.send_signal(signal.SIGSTOP)
    tasks = Path(f"/proc/{proc.pid}/task")
    while proc.poll() is None:
        try:
            # the state follows the parenthesised command name, which may hold spaces
            stats = [(t / "stat").read_text() for t in tasks.iterdir()]
        except OSError:  # a thread exited between listing and reading
            continue
        if {stat.rpartition(")")[2].split()[0] for stat in stats} <= {"T", "t"}:
            return


def _kill_when(
    proc: subprocess.Popen,
    target: Path,
    aim: str,
    before_id: str | None,
    stale: set[Path],
    rng: random.Random,
    image_bytes: int,
    timeout_s: float = 300,
) -> str:
    """
    Wait for the build to reach ``aim``, SIGKILL it; returns the phase it was in.

    Decided by what the build has done, not by time: in extraction, once it has opened its
    temporary directory and then read a random share of the images' bytes; in a write phase, once
    that file is there. The build is stopped before its phase is read, so the phase returned is
    the one the kill hit.
    """
    share, read_before = rng.uniform(0.1, 0.9), None
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout_s:
        phase = _phase(target, before_id, stale)
        if phase == "extracting" and read_before is None:
            read_before = _bytes_read(proc)
        if phase == aim and (
            aim != "extracting" or _bytes_read(proc) - read_before >= share * image_bytes
        ):
            break
        if phase != "starting" and KILL_PHASES.index(phase) > KILL_PHASES.index(aim):
            break  # the poll missed the aimed phase; kill where it is
        time.sleep(0.001)
    if aim != "extracting":
        time.sleep(rng.uniform(0, 0.005))  # somewhere inside the file's write, not at its start
    _stop(proc)
    phase = _phase(target, before_id, stale)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return phase


def make_image_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(random_images(n, seed=3)):
        # VPR layout: a pose per image
        cv2.imwrite(str(folder / f"@{500000 + 5 * i}@4000000@32@T@@@{i:05d}@.png"), img)
    return folder


def run_kill_trials(n: int, workdir: Path, seed: int = 0, images: int = 1500) -> dict:
    """
    ``kill -9`` ``vpr-ros build-map`` ``n`` times, aiming in turn at every phase of KILL_PHASES.

    After each kill the map must load (the previous one or the new one); at the end one more build
    runs and the debris beside the map is measured. Returns ``kill_trials``, ``maps_lost``,
    ``debris_mb`` (after the next build), ``phases`` (where the kills landed), ``failures``.
    """
    rng = random.Random(seed)
    folder = make_image_folder(workdir / "images", images)
    target = workdir / "map"
    cmd = [
        sys.executable,
        "-m",
        "vpr_ros.cli",
        "build-map",
        "--images",
        str(folder),
        "--model",
        MODEL,
        "--out",
        str(target),
        "--min-distance",
        "0",
    ]
    # The first build fills the caches (ONNX export, auto's backend measurement), so every trial
    # starts as the next build would.
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    image_bytes = sum(f.stat().st_size for f in folder.iterdir())
    phases: Counter = Counter()
    lost, failures = 0, []
    for i in tqdm(range(n), desc="kill -9 trials", unit="kill"):
        before, stale = _map_id(target), set(_partial_dirs(target))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        phase = _kill_when(
            proc, target, KILL_PHASES[i % len(KILL_PHASES)], before, stale, rng, image_bytes
        )
        phases[phase] += 1
        if _map_id(target) is None:
            lost += 1
            failures.append(
                f"trial {i} (aimed at {KILL_PHASES[i % len(KILL_PHASES)]}, landed {phase}): no"
                " loadable map"
            )
    left_before = debris_bytes(target)
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return {
        "kill_trials": n,
        "maps_lost": lost,
        "debris_mb_before_next_build": round(left_before / 1e6, 2),
        "debris_mb": round(debris_bytes(target) / 1e6, 2),
        "phases": dict(phases),
        "failures": failures,
    }


# -- full disk -----------------------------------------------------------------------------------
def _random_map(path: Path, n: int, dim: int, seed: int = 0) -> Path:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    model = {"name": "random", "fingerprint": "0", "input_size": [8, 8], "dim": dim,
             "preprocessing": {"resize": [8, 8], "mean": [0, 0, 0], "std": [1, 1, 1]}}
    return write_map(
        path,
        x,
        [Place(i, i) for i in range(n)],
        model,
        IndexConfig("flat", pca_dim=None),
        [{"source": "random"}],
    )


def full_disk_trial(workdir: Path, size_mb: int = 3) -> dict:
    """
    Replace a map on a tmpfs of ``size_mb`` (a real ENOSPC) with one that does not fit.

    Returns ``error`` (the MapError message, or what else happened), ``old_map_intact`` and
    ``left_beside`` (entries other than the map in the tmpfs); ``skipped`` with the reason where
    a tmpfs cannot be mounted (mounting needs root).
    """
    disk = workdir / "small_disk"
    disk.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        return {"skipped": f"cannot mount a tmpfs here: {mounted.stderr.strip()}"}
    try:
        before = load_map(_random_map(disk / "m", 40, 16)).map_id
        try:
            # descriptors + index: about 2.5x the disk
            _random_map(disk / "m", size_mb * 10_000, 32, seed=1)
            error = "no error: the oversized map was written"
        except MapError as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001: the trial reports anything but a MapError
            error = f"crash: {type(e).__name__}: {e}"
        return {"error": error, "old_map_intact": _map_id(disk / "m") == before,
                "left_beside": sorted(p.name for p in disk.iterdir() if p.name != "m")}
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
