"""
Map fuzzing.

Damage real maps every way a disk, a copy or a person can, and check each is refused clearly.

Damages (each applied to a fresh copy of a good map):
  every file (manifest, index, places, descriptors): deleted, truncated (0, 1, half, all but one
  byte), padded, replaced by the same file of another map, and single-bit flips at seeded offsets;
  every manifest key the loader reads: dropped, renamed, retyped, set out of range; each once as a
  plain edit (the manifest checksum no longer matches) and once with the checksum recomputed (a
  hand edit that also fixed the checksum, or a buggy writer), so the schema is tried on its own.

Each damaged map goes through ``load_map`` (as the node and ``localize`` call it), ``vpr-ros
inspect-map`` and ``vpr-ros localize`` (their ``main()`` in this process; a sample also as
subprocesses), and ``load_map(verify=False)`` (the node's ``verify_map:=false``). A clear refusal
is a ``MapError`` with a message, exit 1 from inspect-map, exit 2 from localize, and no traceback.
A sample also goes to a live node's ``~/reload_map`` (``node_reload_sample``). Faults while a map
is written (kill -9, full disk) are in ``map_write_faults``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from vpr_ros.errors import MapError
from vpr_ros.search.faiss_index import IndexConfig
from vpr_ros.maps.mapdir import (
    DESCRIPTORS_FILE,
    INDEX_FILE,
    MANIFEST,
    MANIFEST_CHECKSUM,
    NULL_KEY,
    PLACES_FILE,
    load_map,
    with_checksum,
    write_map,
)
from vpr_ros.maps.places import Place

MODEL = "raw-pixels"  # the cheapest registered model: the campaign is about maps, not descriptors
FILES = (MANIFEST, INDEX_FILE, PLACES_FILE, DESCRIPTORS_FILE)
# Values a key is retyped to; those equal to the original's type are skipped.
RETYPES: tuple = (None, "text", -7, 2.5, True, [], {})
# Keys whose values the loader never reads (descriptive only): damaged with the checksum left stale
# only.
FREE_FORM = ("sources",)
# Optional keys the loader recomputes, identically, when absent: dropping or renaming one (with
# the checksum recomputed) leaves a map that behaves the same, so it is not damage.
RECOMPUTED = (NULL_KEY,)
# Damage names (prefixes) of the classes once found killing the node or loading anyway: KeyError
# map_id / model / efSearch / files, AttributeError (list), mmap ValueError, faiss RuntimeError,
# the unknown index type, and one of each file kind; the node-reload test and the campaign run
# these.
RELOAD_DAMAGES = [
    "drop map_id (checksum stale)",
    "drop map_id (checksum recomputed)",
    "drop model (checksum recomputed)",
    'set index.type to "hnsw"',
    'set index.type to "bogus"',
    "drop files (checksum recomputed)",
    "manifest replaced by []",
    "manifest not UTF-8",
    "set format_version to 1",
    "delete index.faiss",
    "truncate descriptors.npy to 1 ",
    "index.faiss from another map",
    "places.csv from another map",
    "delete manifest.json",
]


@dataclass
class Damage:
    name: str
    apply: Callable[[Path], None]


@dataclass
class Outcome:
    load: str  # refused | accepted | crash
    unverified: str  # load_map(verify=False): refused | accepted | crash
    inspect: int  # exit status, -1 when main() raised
    localize: int
    detail: str = ""


# -- base maps -------------------------------------------------------------------------------
def random_images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        cv2.resize(
            rng.integers(0, 255, (6, 8, 3), dtype=np.uint8),
            (64, 48),
            interpolation=cv2.INTER_NEAREST,
        )
        for _ in range(n)
    ]


def build_base_maps(root: Path, places: int = 24) -> tuple[dict[str, Path], Path, Path]:
    """
    Build one good map per index type (flat, hnsw, ivfpq) and the files around them.

    Another map (other images and place count) whose files stand in as foreign files, and a
    folder of query images.
    """
    from vpr_ros.inference.factory import create_extractor

    extractor = create_extractor(MODEL)

    def write(path: Path, n: int, seed: int, kind: str, params: dict) -> Path:
        rows = [
            Place(
                i,
                (i + 1) * 10**9,
                100.0 * i,
                50.0,
                0.0,
                0.0,
                0.0,
                0.0,
                1.0,
                45.0,
                9.0,
                "32T",
                "fuzz",
                "/cam",
            )
            for i in range(n)
        ]
        return write_map(
            path,
            extractor.extract(random_images(n, seed)),
            rows,
            extractor.describe(),
            IndexConfig(kind, params),
            [{"source": "fuzz images", "topic": "/cam"}],
        )

    params = {"flat": {}, "hnsw": {"M": 8}, "ivfpq": {"nlist": 2, "m": 8, "nbits": 4}}
    maps = {kind: write(root / f"base_{kind}", places, 1, kind, p) for kind, p in params.items()}
    other = write(root / "other", places - 4, 2, "flat", {})
    queries = root / "queries"
    queries.mkdir(exist_ok=True)
    for i, img in enumerate(random_images(2, seed=1)):
        cv2.imwrite(str(queries / f"q{i}.png"), img)
    return maps, other, queries


# -- damages ---------------------------------------------------------------------------------
def _manifest_edit(edit: Callable[[dict], object], fix_checksum: bool) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        manifest = json.loads((d / MANIFEST).read_text())
        result = edit(manifest)
        manifest = manifest if result is None else result
        if fix_checksum and isinstance(manifest, dict):
            manifest = with_checksum(manifest)
        (d / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return apply


def _key_paths(node: object, prefix: tuple = ()) -> Iterator[tuple]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _key_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, (dict, list)):
                yield from _key_paths(v, prefix + (i,))


def _parent(manifest: dict, path: tuple):
    node = manifest
    for k in path[:-1]:
        node = node[k]
    return node


def _drop(path):
    return lambda m: _parent(m, path).pop(path[-1])


def _rename(path):
    def edit(m):
        parent = _parent(m, path)
        parent[f"{path[-1]}_renamed"] = parent.pop(path[-1])
    return edit


def _set(path, value):
    def edit(m):
        _parent(m, path)[path[-1]] = copy.deepcopy(value)
    return edit


def _file_damages(base: Path, other: Path, rng: random.Random, flips: int) -> list[Damage]:
    out = []
    for name in FILES:
        size = (base / name).stat().st_size
        # all but the last meaningful byte (not a trailing newline)
        last = len((base / name).read_bytes().rstrip()) - 1

        def truncate(n, name=name):
            return lambda d: (d / name).write_bytes((d / name).read_bytes()[:n])

        def flip(offset, bit, name=name):
            def apply(d):
                data = bytearray((d / name).read_bytes())
                data[offset] ^= 1 << bit
                (d / name).write_bytes(bytes(data))
            return apply

        out.append(Damage(f"delete {name}", lambda d, name=name: (d / name).unlink()))
        out += [
            Damage(f"truncate {name} to {n} of {size} bytes", truncate(n))
            for n in sorted({0, 1, size // 2, last})
        ]
        out.append(
            Damage(
                f"pad {name} with 16 bytes",
                lambda d, name=name: (d / name).write_bytes((d / name).read_bytes() + b"\0" * 16),
            )
        )
        out.append(
            Damage(
                f"{name} from another map",
                lambda d, name=name: shutil.copyfile(other / name, d / name),
            )
        )
        for _ in range(flips):
            offset, bit = rng.randrange(size), rng.randrange(8)
            out.append(Damage(f"flip bit {bit} of byte {offset} of {name}", flip(offset, bit)))
    return out


def _manifest_damages(base: Path) -> list[Damage]:
    manifest = json.loads((base / MANIFEST).read_text())
    out = []
    for path in _key_paths(manifest):
        label = ".".join(map(str, path))
        original = _parent(manifest, path)[path[-1]]
        edits = [(f"drop {label}", _drop(path)), (f"rename {label}", _rename(path))]
        edits += [(f"retype {label} to {json.dumps(v)}", _set(path, v)) for v in RETYPES
                  if type(v) is not type(original)]
        # With the checksum recomputed, damage only what the loader reads: not descriptive keys,
        # not the checksum itself (recomputing restores it), and not the removal of an optional key
        # that is null.
        reread = path[0] not in (*FREE_FORM, MANIFEST_CHECKSUM)
        for what, edit in edits:
            if path[0] in RECOMPUTED and not what.startswith("retype"):
                out.append(
                    Damage(f"{what} (checksum stale)", _manifest_edit(edit, fix_checksum=False))
                )
                continue
            out.append(
                Damage(f"{what} (checksum stale)", _manifest_edit(edit, fix_checksum=False))
            )
            if reread and not (original is None and not what.startswith("retype")):
                out.append(
                    Damage(
                        f"{what} (checksum recomputed)", _manifest_edit(edit, fix_checksum=True)
                    )
                )
    # values of the right type but out of range or inconsistent, checksum recomputed
    kind = manifest["index"]["type"]
    values = [
        (("index", "type"), "bogus"),
        (("index", "type"), "hnsw" if kind != "hnsw" else "flat"),
        (("index", "type"), "ivfpq" if kind != "ivfpq" else "flat"),
        (("place_count",), 0),
        (("place_count",), -1),
        (("place_count",), manifest["place_count"] + 1),
        (("place_count",), manifest["place_count"] - 1),
        (("dim",), manifest["dim"] + 1),
        (("model", "dim"), manifest["dim"] + 1),
        (("model", "input_size"), [0, 0]),
        (("format_version",), 1),
        (("format_version",), 99),
        (("format",), "other/map"),
        (("map_id",), ""),
        (("created",), "yesterday"),
        (("files",), {}),
        (("files", DESCRIPTORS_FILE), "0" * 64),
        (("files", INDEX_FILE), "not a digest"),
        (("files", "../outside"), "0" * 64),
        (("model", "preprocessing", "mean"), [0.5, 0.5]),
    ]
    for param in manifest["index"]["params"]:
        values.append((("index", "params", param), 0))
    for path, v in values:
        label = f"set {'.'.join(path)} to {json.dumps(v)}"
        out.append(
            Damage(
                f"{label} (checksum recomputed)", _manifest_edit(_set(path, v), fix_checksum=True)
            )
        )
    out += [
        Damage(f"manifest replaced by {t}", lambda d, t=t: (d / MANIFEST).write_text(t))
        for t in ("[]", "null", '"map"', "42")
    ]
    out.append(Damage("manifest not UTF-8", lambda d: (d / MANIFEST).write_bytes(b"\xff\xfe{}")))
    out.append(
        Damage(
            "manifest nested 100000 deep",
            lambda d: (d / MANIFEST).write_text("[" * 100000 + "]" * 100000),
        )
    )
    return out


def catalogue(base: Path, other: Path) -> list[Damage]:
    """
    Every structured damage of ``base`` (no random bit flips).

    ``other`` gives the foreign files.
    """
    return _file_damages(base, other, random.Random(0), flips=0) + _manifest_damages(base)


def pick(candidates: list[Damage], prefixes: list[str]) -> list[Damage]:
    """
    Return the first damage whose name starts with each prefix.

    A named sample of the damage classes.
    """
    return [next(d for d in candidates if d.name.startswith(p)) for p in prefixes]


def damages(
    maps: dict[str, Path], other: Path, target: int, seed: int = 0
) -> list[tuple[Path, Damage]]:
    """
    At least ``target`` damages over the base maps.

    Every structured damage, then bit flips to fill up.
    """
    rng = random.Random(seed)
    out = [(base, d) for base in maps.values() for d in catalogue(base, other)]
    per_file = -(-max(0, target - len(out)) // (len(maps) * len(FILES)))
    for base in maps.values():
        out += [
            (base, d)
            for d in _file_damages(base, other, rng, flips=per_file)
            if d.name.startswith("flip")
        ]
    return out


# -- checks ----------------------------------------------------------------------------------
def _load(path: Path, model: dict, verify: bool) -> tuple[str, str]:
    try:
        load_map(path, model, verify=verify)
    except MapError as e:
        return ("refused", str(e)) if str(e).strip() else ("crash", "MapError without a message")
    except Exception as e:  # noqa: BLE001: anything else is exactly what the campaign counts
        return "crash", f"{type(e).__name__}: {e}"
    return "accepted", ""


def _cli(argv: list[str]) -> tuple[int, str]:
    """``vpr-ros`` main() in this process: (exit status, stdout + stderr); -1 when it raised."""
    from vpr_ros.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            rc = main(argv)
        except BaseException as e:  # noqa: BLE001
            return -1, f"{type(e).__name__}: {e}"
    return rc, out.getvalue()


def check(path: Path, model: dict, queries: Path, scratch: Path) -> Outcome:
    load, detail = _load(path, model, verify=True)
    unverified, udetail = _load(path, model, verify=False)
    inspect, itext = _cli(["inspect-map", str(path)])
    localize, ltext = _cli(
        [
            "localize",
            "--map",
            str(path),
            "--images",
            str(queries),
            "--out",
            str(scratch / "matches.jsonl"),
        ]
    )
    notes = [detail or udetail] + [
        t for t in (itext, ltext) if "Traceback" in t or t.startswith(("-1", "Error"))
    ]
    return Outcome(load, unverified, inspect, localize, " | ".join(n for n in notes if n))


def clear_refusal(o: Outcome) -> bool:
    return o.load == "refused" and o.inspect == 1 and o.localize == 2 and o.unverified != "crash"


def crashed(o: Outcome) -> bool:
    return "crash" in (o.load, o.unverified) or o.inspect not in (0, 1) or o.localize not in (0, 2)


def false_verify(o: Outcome) -> bool:
    """inspect-map said "verifies" for a map that the loader or localize refused."""
    return o.inspect == 0 and (o.load != "accepted" or o.localize != 0)


def subprocess_check(path: Path, queries: Path, scratch: Path) -> tuple[bool, str]:
    """
    Run the installed ``vpr-ros`` as a user runs it.

    Inspect exit 1, localize exit 2, no traceback.
    """
    exe = [sys.executable, "-m", "vpr_ros.cli"]
    inspect = subprocess.run(
        exe + ["inspect-map", str(path)], capture_output=True, text=True, timeout=300
    )
    localize = subprocess.run(
        exe
        + [
            "localize",
            "--map",
            str(path),
            "--images",
            str(queries),
            "--out",
            str(scratch / "m.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = inspect.stdout + inspect.stderr + localize.stdout + localize.stderr
    ok = (
        inspect.returncode == 1
        and localize.returncode == 2
        and "Traceback" not in text
        and "error:" in localize.stderr
    )
    return ok, f"inspect {inspect.returncode}, localize {localize.returncode}: {text[-400:]}"


def run_map_campaign(
    n: int = 1000,
    seed: int = 0,
    subprocess_sample: int = 3,
    workdir: Path | None = None,
    progress: bool = True,
    index_types: tuple[str, ...] = ("flat", "hnsw", "ivfpq"),
) -> dict:
    """
    Damage at least ``n`` maps (built with each of ``index_types``) and count outcomes.

    Returns ``inputs`` (damaged maps), ``refused`` (clear refusals on every path), ``crashes``,
    ``false_verifies``, ``accepted`` (loaded anyway), ``subprocess_checked`` /
    ``subprocess_failed``, and ``failures`` (up to 20 named examples of anything but a clear
    refusal).
    """
    with contextlib.ExitStack() as stack:
        root = workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="vpr_fuzz_maps_"))
        )
        maps, other, queries = build_base_maps(root)
        model = load_map(maps["flat"]).model
        todo = damages({k: maps[k] for k in index_types}, other, n, seed)
        counts: Counter = Counter()
        failures: list[str] = []
        sample = set(
            random.Random(seed).sample(range(len(todo)), min(subprocess_sample, len(todo)))
        )
        work = root / "damaged"
        for i, (base, damage) in enumerate(
            tqdm(todo, desc="map fuzzing", unit="map", disable=not progress)
        ):
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(base, work)
            damage.apply(work)
            o = check(work, model, queries, root)
            counts["inputs"] += 1
            counts["refused"] += clear_refusal(o)
            counts["crashes"] += crashed(o)
            counts["false_verifies"] += false_verify(o)
            counts["accepted"] += o.load == "accepted"
            if not clear_refusal(o) and len(failures) < 20:
                failures.append(f"{base.name}: {damage.name}: {o}")
            if i in sample:
                ok, why = subprocess_check(work, queries, root)
                counts["subprocess_checked"] += 1
                if not ok:
                    counts["subprocess_failed"] += 1
                    failures.append(f"{base.name}: {damage.name} (subprocess): {why}")
        return {
            k: counts[k]
            for k in (
                "inputs",
                "refused",
                "crashes",
                "false_verifies",
                "accepted",
                "subprocess_checked",
                "subprocess_failed",
            )
        } | {"failures": failures}


# -- the node's ~/reload_map ---------------------------------------------------------------------
def node_reload_sample(base: Path, picks: list[Damage], workdir: Path, timeout_s: float = 30.0,
                       node_args: list[str] | None = None) -> dict:
    """
    Run a real node (own process) serving ``base``.

    For each damage, the map under it is damaged and ``~/reload_map`` called: the reload must be
    refused with a message and the old map keep matching.

    Returns ``reloads``, ``refused`` (refused with a message), ``old_map_served`` (a frame sent
    after the refusal was matched against the old map), ``node_alive`` and ``failures``.
    """
    import rclpy
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    from vpr_ros.imaging import rgb_to_image_fields
    from vpr_harness.replay.collector import OutputCollector
    from vpr_harness.replay.processes import start_node, stop_process, wait_for_subscriber

    live = workdir / "live_map"
    shutil.rmtree(live, ignore_errors=True)
    shutil.copytree(base, live)
    old_id = json.loads((base / MANIFEST).read_text())["map_id"]
    frame = cv2.cvtColor(random_images(1, seed=1)[0], cv2.COLOR_BGR2RGB)
    counts: Counter = Counter()
    failures: list[str] = []
    collector = OutputCollector()
    node = start_node(live, MODEL, "/fuzz/camera", workdir / "node.log", extra=node_args)
    try:
        client = collector.node.create_client(Trigger, "/vpr_localizer/reload_map")
        if not client.wait_for_service(timeout_sec=120):
            raise RuntimeError(
                "the node never offered ~/reload_map:"
                f" {(workdir / 'node.log').read_text()[-2000:]}"
            )
        pub = collector.node.create_publisher(Image, "/fuzz/camera", 10)
        wait_for_subscriber(pub, node, workdir / "node.log")
        stamp = 1000
        for damage in tqdm(picks, desc="node reloads", unit="map"):
            shutil.rmtree(live)
            shutil.copytree(base, live)
            damage.apply(live)
            result = client.call(Trigger.Request(), timeout_sec=timeout_s)
            counts["reloads"] += 1
            refused = result is not None and not result.success and len(result.message) > 20
            counts["refused"] += refused
            stamp += 1
            msg = Image()
            for k, v in rgb_to_image_fields(frame, "rgb8").items():
                setattr(msg, k, v.tobytes() if k == "data" else v)
            msg.header.stamp.sec = stamp
            pub.publish(msg)
            served = collector.wait_for(
                lambda: any(
                    m["header"]["stamp"]["sec"] == stamp and m["map_id"] == old_id
                    for _, m in collector.matches
                ),
                timeout_s,
            )
            counts["old_map_served"] += served
            if not (refused and served):
                failures.append(
                    f"{damage.name}: reload {result and (result.success, result.message)}, old map"
                    f" served: {served}"
                )
        counts["node_alive"] = int(node.poll() is None)
        collector.node.destroy_client(client)
    finally:
        stop_process(node)
        collector.close()
        if rclpy.ok():
            rclpy.shutdown()
    return {k: counts[k] for k in ("reloads", "refused", "old_map_served", "node_alive")} | {
        "failures": failures
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Damage maps every way and count clear refusals.")
    p.add_argument(
        "--n",
        type=int,
        default=1000,
        help="at least this many damaged maps (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--subprocess-sample",
        type=int,
        default=10,
        help="damaged maps also run through the vpr-ros command",
    )
    a = p.parse_args(argv)
    result = run_map_campaign(a.n, a.seed, a.subprocess_sample)
    for line in result.pop("failures"):
        print(line)
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0 if result["refused"] == result["inputs"] else 1


if __name__ == "__main__":
    sys.exit(main())
