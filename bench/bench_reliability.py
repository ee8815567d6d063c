"""
Reliability campaign (issue 9).

Image fuzzing, overload, map fuzzing, node reloads, kill -9 trials, full disk.

Runs every part the tree has and says so for any it lacks; ends with one line: inputs=N crashes=C
refusals_pct=P false_verifies=F kill_trials=K maps_lost=L debris_mb=D rss_growth_pct=G

  inputs          damaged inputs tried: generated image messages (offline and through a live node),
                  damaged maps, damaged-map reloads of a live node, full-disk writes
  crashes         anything but a clear refusal or a correct result: an uncaught exception, a
  traceback,
                  a dead node, a wrong exit status, a valid image refused
  refusals_pct    clear refusals among the inputs that must be refused (offline images that did not
                  decode, damaged maps, reloads, full-disk writes)
  false_verifies  `inspect-map` said "verifies" for a map that load_map or localize refused
  kill_trials, maps_lost, debris_mb   kill -9 of build-map; debris left after the next build
  rss_growth_pct  the node's RSS growth over the worst overload phase (NA when overload did not
  run)
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from pathlib import Path

from vpr_harness.replay import fuzz_maps, map_write_faults
from vpr_harness.replay.dds_env import apply_loopback_dds_env
from vpr_ros.host import describe

# (full, --quick) sizes of each part; the full run stays under 15 minutes on 2 shared cores
SIZES = {
    "images": (10_000, 500),
    "images_live_per_transport": (250, 25),
    "overload": (((60.0, 5000), (300.0, 5000)), ((60.0, 300), (300.0, 300))),
    "maps": (1000, 0),  # 0: the structured damages of one index type only, no random bit flips
    "maps_subprocess": (10, 1),
    "reloads": (14, 4),
    "kill_trials": (50, 6),
}


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _section(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def main(argv: list[str] | None = None) -> int:
    apply_loopback_dds_env()  # before rclpy starts here: DDS on this machine, a domain of our own
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="a short run of every part (a few minutes)"
    )
    ap.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    ap.add_argument(
        "--workdir",
        type=Path,
        help="keep maps, bags and logs here (default: a temporary directory)",
    )
    args = ap.parse_args(argv)
    size = {k: v[1] if args.quick else v[0] for k, v in SIZES.items()}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vpr_reliability_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {describe()}; {'quick' if args.quick else 'full'} run; work in {workdir}")
    total = {"inputs": 0, "crashes": 0, "refused": 0, "must_refuse": 0}
    gaps: list[str] = []
    rss_growth = "NA"

    def add(inputs: int, crashes: int, refused: int, must_refuse: int) -> None:
        for k, v in zip(
            ("inputs", "crashes", "refused", "must_refuse"),
            (inputs, crashes, refused, must_refuse),
        ):
            total[k] += v

    # -- images ---------------------------------------------------------------------------------
    if _have("vpr_harness.replay.fuzz_images"):
        from vpr_harness.replay.fuzz_images import run_image_campaign, run_live_campaign

        t = _section(
            f"image fuzzing: {size['images']} generated messages through the conversion layer"
        )
        r = run_image_campaign(size["images"], args.seed)
        print(
            f"inputs {r['inputs']}, decoded {r['decoded']}, refused {r['refused']}, crashes"
            f" {r['crashes']} ({time.monotonic() - t:.0f} s)"
        )
        for example in r["crash_examples"]:
            print(f"  crash: {example}")
        add(r["inputs"], r["crashes"], r["refused"], r["inputs"] - r["decoded"])
        t = _section(
            f"image fuzzing through a live node: {size['images_live_per_transport']} per transport"
        )
        live = run_live_campaign(
            workdir / "images_live",
            per_transport=size["images_live_per_transport"],
            seed=args.seed + 3,
        )
        for transport, lr in live.items():
            died = 0 if lr["node_alive"] else 1
            print(
                f"{transport}: sent {lr['sent_bad']} bad, node bad={lr['bad']}"
                f" failed={lr['failed']} dropped={lr['dropped']}, good frames matched"
                f" {lr['good_matched']}/{lr['good_sent']}, node alive {lr['node_alive']}"
            )
            add(lr["sent_bad"], lr["failed"] + died, 0, 0)
        print(f"({time.monotonic() - t:.0f} s)")
    else:
        gaps.append("image fuzzing (tools/vpr_harness/replay/fuzz_images.py is not in this tree)")

    # -- overload -------------------------------------------------------------------------------
    if _have("vpr_harness.replay.overload"):
        from vpr_harness.replay.overload import run_overload

        t = _section(
            f"overload: {', '.join(f'{n} frames at {hz:g} Hz' for hz, n in size['overload'])}"
        )
        phases = run_overload(workdir / "overload", size["overload"])
        for p in phases:
            print(
                f"{p['rate_hz']:g} Hz: sent {p['frames']}, received {p['received']} = processed"
                f" {p['processed']} + dropped {p['dropped']}: {p['accounted']}, stamps ok"
                f" {p['stamps_ok']}, RSS {p['rss_start_mb']} -> {p['rss_end_mb']} MB"
                f" ({p['rss_growth_pct']} %), latency p50 {p['latency_p50_first_ms']} ->"
                f" {p['latency_p50_last_ms']} ms"
            )
            total["crashes"] += p["failed"] + (0 if p["accounted"] and p["stamps_ok"] else 1)
        rss_growth = max(p["rss_growth_pct"] for p in phases)
        print(f"({time.monotonic() - t:.0f} s)")
    else:
        gaps.append("overload (tools/vpr_harness/replay/overload.py is not in this tree)")

    # -- maps -----------------------------------------------------------------------------------
    t = _section("map fuzzing: damaged maps through load_map, inspect-map, localize")
    kinds = ("flat", "hnsw", "ivfpq") if not args.quick else ("hnsw",)
    m = fuzz_maps.run_map_campaign(
        size["maps"], args.seed, size["maps_subprocess"], workdir / "maps", index_types=kinds
    )
    print(
        f"inputs {m['inputs']}, clear refusals {m['refused']}, crashes {m['crashes']}, false"
        f" verifies {m['false_verifies']}, loaded anyway {m['accepted']}, subprocess sample"
        f" {m['subprocess_checked']} ({m['subprocess_failed']} failed)"
        f" ({time.monotonic() - t:.0f} s)"
    )
    for failure in m["failures"]:
        print(f"  {failure}")
    add(m["inputs"], m["crashes"] + m["subprocess_failed"], m["refused"], m["inputs"])

    t = _section(f"node reloads of damaged maps: {size['reloads']}")
    base, other, _ = fuzz_maps.build_base_maps(workdir / "reload_maps")
    picks = fuzz_maps.pick(
        fuzz_maps.catalogue(base["flat"], other),
        random.Random(args.seed).sample(fuzz_maps.RELOAD_DAMAGES, size["reloads"]),
    )
    rl = fuzz_maps.node_reload_sample(base["flat"], picks, workdir / "reload_maps")
    print(
        f"reloads {rl['reloads']}, refused {rl['refused']}, old map served after each"
        f" {rl['old_map_served']}, node alive {rl['node_alive']} ({time.monotonic() - t:.0f} s)"
    )
    for failure in rl["failures"]:
        print(f"  {failure}")
    add(
        rl["reloads"],
        1 - rl["node_alive"],
        min(rl["refused"], rl["old_map_served"]),
        rl["reloads"],
    )

    # -- faults ---------------------------------------------------------------------------------
    t = _section(
        f"kill -9 during build-map: {size['kill_trials']} trials over the phases"
        f" {', '.join(map_write_faults.KILL_PHASES)}"
    )
    k = map_write_faults.run_kill_trials(size["kill_trials"], workdir / "kills", args.seed)
    print(
        f"maps lost {k['maps_lost']}, debris before the next build"
        f" {k['debris_mb_before_next_build']} MB, after it {k['debris_mb']} MB; kills landed in"
        f" {k['phases']} ({time.monotonic() - t:.0f} s)"
    )
    for failure in k["failures"]:
        print(f"  {failure}")

    t = _section("full disk while writing a map")
    d = map_write_faults.full_disk_trial(workdir / "disk")
    if "skipped" in d:
        gaps.append(f"full disk ({d['skipped']})")
        print(d["skipped"])
    else:
        clear = "the disk is full" in d["error"] and d["old_map_intact"] and not d["left_beside"]
        print(
            f"error: {d['error']}\nold map intact {d['old_map_intact']}, left beside it"
            f" {d['left_beside']} ({time.monotonic() - t:.0f} s)"
        )
        add(1, 0 if d["error"].startswith("cannot write") else 1, int(clear), 1)

    for gap in gaps:
        print(f"GAP: not run: {gap}")
    pct = 100.0 * total["refused"] / total["must_refuse"] if total["must_refuse"] else float("nan")
    print(
        f"inputs={total['inputs']} crashes={total['crashes']} refusals_pct={pct:.2f}"
        f" false_verifies={m['false_verifies']} kill_trials={k['kill_trials']}"
        f" maps_lost={k['maps_lost']} debris_mb={k['debris_mb']} rss_growth_pct={rss_growth}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
