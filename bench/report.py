"""
Run every benchmark and write one Markdown report (`make bench`).

    .venv/bin/python bench/report.py [--out bench_out/report.md] [--full] [--only NAME ...]

Each benchmark runs in its own process (so one cannot skew another's memory or threads) with a
time limit, and ends with one ``key=value`` line; the report has the machine, a summary table of
those lines with each benchmark's wall time, and every benchmark's output. The default set is
sized to finish in about 15 minutes on a 2-core machine; ``--full`` adds the long runs
(1,000,000-place search, the full reliability campaign, training).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import print_machine

BENCH = Path(__file__).resolve().parent
KEY_VALUE_LINE = re.compile(r"^\s*[A-Za-z_][\w.-]*=\S+(\s+[A-Za-z_][\w.-]*=\S+)*\s*$")
# a progress bar's redraws, e.g. "frames:  48%|████▊     | 43/89 [00:10<00:11,  4.00frame/s]"
PROGRESS_LINE = re.compile(r"\d+%\|.*\|\s*\d+/\d+")


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    args: tuple[str, ...]
    what: str
    limit_s: int
    full_only: bool = False


BENCHMARKS = (
    Benchmark(
        "node",
        "bench_node.py",
        (),
        "node overhead: publish -> /vpr/match over the bare pipeline (raw and compressed)",
        300,
    ),
    Benchmark(
        "backends",
        "bench_backends.py",
        ("--models", "scicevpr-b", "--runs", "5"),
        "every CPU backend against torch eager fp32 (SciceVPR-B, seeded weights); cosine to fp32",
        900,
    ),
    Benchmark(
        "startup",
        "bench_startup.py",
        (
            "--models",
            "scicevpr-b",
            "--configs",
            "torch:fp32",
            "torch-compile:bf16",
            "onnxruntime:int8",
            "openvino:bf16",
        ),
        "a fresh process to its first descriptor per backend, cold cache then warm cache",
        900,
    ),
    Benchmark(
        "node_start",
        "bench_node_start.py",
        (),
        "the localize node's start to its first /vpr/match per backend (default model)",
        900,
    ),
    Benchmark(
        "rerank",
        "bench_rerank.py",
        ("--only", "timing", "--only", "tokyo"),
        "XFeat re-ranking of the top 10 per 640x480 frame against the global descriptor",
        300,
    ),
    Benchmark(
        "rerank_fol",
        "bench_rerank_fol.py",
        ("--frames", "3"),
        "FoL re-ranking of the top 10 against FoL-B's global pass",
        300,
    ),
    Benchmark(
        "search_100k",
        "bench_search.py",
        ("--places", "100000", "--queries", "300"),
        "search at 100,000 places: latency, recall vs exact, memory, build",
        300,
    ),
    Benchmark(
        "build_map",
        "bench_build_map.py",
        (),
        "build-map images/s over bare extraction of the same frames",
        400,
    ),
    Benchmark(
        "build_distributed",
        "bench_build_distributed.py",
        ("--frames", "400"),
        "build-map on Ray with 1 and 2 workers (loopback)",
        400,
    ),
    Benchmark(
        "matching",
        "bench_matching.py",
        ("--datasets", "demo", "gardens"),
        "recall and pose-prior precision of every pipeline configuration",
        400,
    ),
    Benchmark(
        "search_1m",
        "bench_search.py",
        ("--places", "1000000"),
        "search at 1,000,000 places",
        1800,
        full_only=True,
    ),
    Benchmark(
        "matching_all",
        "bench_matching.py",
        (),
        "every configuration on Nordland, the demo route and Gardens Point",
        1800,
        full_only=True,
    ),
    Benchmark(
        "conditions",
        "bench_conditions.py",
        (),
        "pose priors under every replay condition on every data set, leave-one-set-out fits",
        1800,
        full_only=True,
    ),
    Benchmark(
        "rerank_confidence",
        "bench_rerank_confidence.py",
        (),
        "the re-ranking confidence fitted on one world's demo drive, checked on another's",
        1200,
        full_only=True,
    ),
    Benchmark(
        "reliability",
        "bench_reliability.py",
        (),
        "the reliability campaign: fuzzed inputs, damaged maps, kills, overload",
        1800,
        full_only=True,
    ),
)


@dataclass
class Outcome:
    benchmark: Benchmark
    status: str  # "ok", "failed (rc N)", "timed out", "absent"
    wall_s: float
    output: str

    @property
    def result_line(self) -> str:
        """Return the benchmark's last ``key=value`` line, or '' if it printed none."""
        for line in reversed(self.output.splitlines()):
            if KEY_VALUE_LINE.match(line):
                return line.strip()
        return ""


def run(benchmark: Benchmark) -> Outcome:
    script = BENCH / benchmark.script
    if not script.is_file():
        return Outcome(benchmark, "absent", 0.0, "")
    print(f"== {benchmark.name}: {benchmark.script} {' '.join(benchmark.args)}", flush=True)
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(script), *benchmark.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=benchmark.limit_s,
            env=os.environ.copy(),
        )
        output = done.stdout
        status = "ok" if done.returncode == 0 else f"failed (rc {done.returncode})"
    except subprocess.TimeoutExpired as e:
        output = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        status = f"timed out after {benchmark.limit_s} s"
    outcome = Outcome(benchmark, status, time.monotonic() - start, output)
    print(f"   {status} in {outcome.wall_s:.0f} s: {outcome.result_line}", flush=True)
    return outcome


def _tail(text: str, lines: int = 60) -> str:
    # progress bars redraw with carriage returns: keep each line's final state, and of a bar
    # only its finished state
    kept = [line.rsplit("\r", 1)[-1] for line in text.rstrip().splitlines()]
    kept = [line for line in kept if not PROGRESS_LINE.search(line) or "100%|" in line]
    if len(kept) > lines:
        kept = [f"... ({len(kept) - lines} earlier lines)"] + kept[-lines:]
    return "\n".join(kept)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render(outcomes: list[Outcome], machine: str, total_s: float, full: bool) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# vpr_ros benchmark report",
        "",
        f"- date: {now}; commit: {_git_commit()}; python {sys.version.split()[0]}",
        f"- {machine}",
        f"- set: {'full' if full else 'default (--full adds the long runs)'};"
        f" total wall time {total_s / 60:.1f} min",
        "- every ratio below is measured against a reference taken in the same benchmark run",
        "",
        "| benchmark | what | status | wall s | result |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        result = f"`{o.result_line}`" if o.result_line else ""
        lines.append(
            f"| {o.benchmark.name} | {o.benchmark.what} | {o.status} | {o.wall_s:.0f} | {result} |"
        )
    for o in outcomes:
        if o.status == "absent":
            continue
        command = f"python bench/{o.benchmark.script} {' '.join(o.benchmark.args)}".strip()
        lines += ["", f"## {o.benchmark.name}", "", f"`{command}`: {o.status}", ""]
        lines += ["```", _tail(o.output), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench_out/report.md"),
        help="the Markdown report (default: %(default)s)",
    )
    parser.add_argument("--full", action="store_true", help="add the long runs (hours)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[b.name for b in BENCHMARKS],
        help="run only these benchmarks",
    )
    args = parser.parse_args()
    chosen = [
        b
        for b in BENCHMARKS
        if (b.name in args.only if args.only else (args.full or not b.full_only))
    ]
    machine = print_machine()
    start = time.monotonic()
    outcomes = [run(b) for b in chosen]
    report = render(outcomes, machine, time.monotonic() - start, args.full)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"wrote {args.out}")
    failed = [o.benchmark.name for o in outcomes if o.status not in ("ok", "absent")]
    minutes = (time.monotonic() - start) / 60
    print(f"benchmarks={len(outcomes)} failed={len(failed)} minutes={minutes:.1f}")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (see {args.out})")


if __name__ == "__main__":
    main()
