"""
Search at map scale.

Single-query latency, recall against exact search, memory, load/build time, disk.

    .venv/bin/python bench/bench_search.py --places 1000000 [--dim 512] [--index auto]

Synthetic descriptors with route-like structure, at the dim a large map searches in
(the PCA output, ``PCA_AUTO_DIM``): the map is a sequence of streets of 50-400
consecutive places; each street belongs to one of 1024 districts (a shared appearance
centre) and its places follow a random walk (AR(1), correlation 0.95 from one place to
the next, like neighbouring keyframes), with a variance spectrum falling as 1/rank as
PCA'd descriptors have.  Queries are 1000 map places revisited: the place's descriptor
plus noise of the same spectrum at 0.3 of its norm, re-normalised.  Recall@1 is against
exact search in the same space (faiss flat over the map's float32 descriptors).

The map is written with ``write_map`` (build_s covers index build, files and checksums)
and loaded by a fresh process (``load_map``; the sha256 of every file is timed apart),
which reports its resident-memory growth after loading and after the queries (the
re-score touches float16 rows), the load time and single-query search times
(``PlaceIndex.search`` with k=5, as the localizer calls it).  It then drives a walk of
``WALK`` consecutive map places (noisy views, in order) through ``Localizer.match`` with the
place HMM (``temporal="hmm"``, the default) and reports the filter's own per-frame cost (its
``latency_ms.temporal``), which must not grow with the map.  Ends with
``places=N p50_ms=X recall_at_1=Y rss_gib=Z build_s=B temporal_ms=T``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from vpr_ros.search.faiss_index import PCA_AUTO_DIM, IndexConfig
from vpr_ros.maps.mapdir import DESCRIPTORS_FILE, write_map
from vpr_ros.maps.places import Place

DISTRICTS = 1024
STREET = (50, 400)  # places per street
RHO = 0.95  # correlation of neighbouring places
QUERY_NOISE = 0.3
K = 5
WALK = 300  # frames of the walk the temporal filter follows
_CHUNK = 65_536


def synthetic_map(path: Path, n: int, dim: int, seed: int = 0) -> np.ndarray:
    """[n, dim] L2-normalised route-like descriptors written to an .npy memmap at ``path``."""
    rng = np.random.default_rng(seed)
    # std per dim: variance ~ 1/rank
    spectrum = ((np.arange(dim) + 1.0) ** -0.5).astype(np.float32)
    centres = rng.standard_normal((DISTRICTS, dim)).astype(np.float32) * spectrum
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    start = 0
    while start < n:
        length = min(int(rng.integers(*STREET)), n - start)
        steps = rng.standard_normal((length, dim)).astype(np.float32) * spectrum
        walk = lfilter([np.sqrt(1 - RHO**2)], [1, -RHO], steps, axis=0).astype(np.float32)
        street = centres[rng.integers(DISTRICTS)] + 0.7 * walk
        out[start:start + length] = street / np.linalg.norm(street, axis=1, keepdims=True)
        start += length
    out.flush()
    return out


def synthetic_queries(
    descriptors: np.ndarray, count: int, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Return (queries [Q, dim], the map rows they revisit)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(descriptors), size=min(count, len(descriptors)), replace=False))
    return noisy_views(descriptors, rows, rng), rows


def walk_queries(descriptors: np.ndarray, seed: int = 2) -> np.ndarray:
    """Noisy views of ``WALK`` consecutive map places from a random start, in order."""
    rng = np.random.default_rng(seed)
    length = min(WALK, len(descriptors))
    start = int(rng.integers(0, len(descriptors) - length + 1))
    return noisy_views(descriptors, np.arange(start, start + length), rng)


def noisy_views(descriptors: np.ndarray, rows: np.ndarray, rng) -> np.ndarray:
    """Map rows plus noise of the map's spectrum at ``QUERY_NOISE`` of their norm, normalised."""
    dim = descriptors.shape[1]
    spectrum = ((np.arange(dim) + 1.0) ** -0.5).astype(np.float32)
    noise = rng.standard_normal((len(rows), dim)).astype(np.float32) * spectrum
    q = descriptors[rows] + QUERY_NOISE * noise / np.linalg.norm(spectrum)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_top1(descriptors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact nearest place of each query (inner product), streaming the map in chunks."""
    best_score = np.full(len(queries), -np.inf, np.float32)
    best = np.zeros(len(queries), np.int64)
    for start in range(0, len(descriptors), _CHUNK):
        sims = np.asarray(descriptors[start:start + _CHUNK]) @ queries.T  # [chunk, Q]
        top = sims.argmax(0)
        score = sims[top, np.arange(len(queries))]
        better = score > best_score
        best_score[better], best[better] = score[better], top[better] + start
    return best


def _rss_bytes(field: str = "VmRSS") -> int:
    """
    Resident memory (VmRSS), or its part in anonymous memory or mapped files.

    The parts: RssAnon and RssFile.
    """
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(f"{field}:"))


def load_and_search(map_dir: Path, queries_file: Path) -> dict:
    """
    Run in a fresh process: load the map, then time single-query searches.

    Then the temporal filter's cost along the walk (``walk.npy`` beside the queries).
    """
    from vpr_ros.localizer import Localizer, LocalizerConfig
    from vpr_ros.maps.mapdir import PLACES_FILE, load_map, read_manifest, verify_files
    from vpr_ros.maps.places import read_places

    queries = np.load(queries_file)
    before, file_before = _rss_bytes(), _rss_bytes("RssFile")
    t0 = time.perf_counter()
    vpr_map = load_map(map_dir, verify=False)
    load_s = time.perf_counter() - t0
    loaded = _rss_bytes()
    times, cpu, top1 = [], [], []
    for q in queries:
        t, c = time.perf_counter(), time.process_time()
        _, ids = vpr_map.index.search(q[None], K)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        top1.append(int(ids[0, 0]))
    after_queries = _rss_bytes()
    file_backed = _rss_bytes("RssFile") - file_before
    t0 = time.perf_counter()
    assert not verify_files(map_dir, read_manifest(map_dir))
    verify_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    read_places(map_dir / PLACES_FILE)
    places_s = time.perf_counter() - t0
    localizer = Localizer(vpr_map, None, LocalizerConfig(temporal="hmm"))
    walk = [localizer.match(q) for q in np.load(queries_file.with_name("walk.npy"))]
    return {
        "load_s": load_s,
        "verify_s": verify_s,
        "places_s": places_s,
        "rss_loaded": loaded - before,
        "rss_after_queries": after_queries - before,
        "rss_file_after_queries": file_backed,
        "times_ms": [t * 1e3 for t in times],
        "cpu_ms": [c * 1e3 for c in cpu],
        "top1": top1,
        "index": vpr_map.manifest.to_dict()["index"],
        "temporal_ms": [m.latency_ms.temporal for m in walk],
        "match_ms": [m.latency_ms.total for m in walk],
        "temporal_applied": float(np.mean([m.temporal.applied for m in walk])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--places", type=int, required=True, help="map size")
    parser.add_argument(
        "--dim",
        type=int,
        default=PCA_AUTO_DIM,
        help="descriptor dim (default: %(default)s, the PCA output a large map searches in)",
    )
    parser.add_argument(
        "--index",
        default="auto",
        choices=["auto", "flat", "hnsw", "ivfpq"],
        help="default: %(default)s",
    )
    parser.add_argument("--queries", type=int, default=1000, help="default: %(default)s")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the map is written (default: a temporary directory, removed)",
    )
    parser.add_argument(
        "--child", nargs=2, type=Path, metavar=("MAP", "QUERIES"), help=argparse.SUPPRESS
    )
    a = parser.parse_args()
    if a.child:
        print(json.dumps(load_and_search(*a.child)))
        return

    work = a.workdir or Path(tempfile.mkdtemp(prefix="vpr_bench_search_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(a, work)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run(a: argparse.Namespace, work: Path) -> None:
    print(
        f"host: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other processes"
        " share this machine)"
    )
    t = time.perf_counter()
    source = synthetic_map(work / "synthetic.npy", a.places, a.dim)
    queries, revisited = synthetic_queries(source, a.queries)
    np.save(work / "queries.npy", queries)
    np.save(work / "walk.npy", walk_queries(source))
    print(
        f"generated {a.places} x {a.dim} descriptors and {len(queries)} queries in"
        f" {time.perf_counter() - t:.1f} s"
    )

    model = {"name": "synthetic", "fingerprint": "synthetic", "input_size": [1, 1], "dim": a.dim,
             "preprocessing": {"resize": [1, 1], "mean": [0, 0, 0], "std": [1, 1, 1]}}
    places = [Place(i, i * 100_000_000, 2.0 * i, 0.0) for i in range(a.places)]
    t = time.perf_counter()
    map_dir = write_map(
        work / "map",
        source,
        places,
        model,
        IndexConfig(a.index, pca_dim=None),
        [{"source": "synthetic"}],
    )
    build_s = time.perf_counter() - t
    del places, source
    (work / "synthetic.npy").unlink()
    sizes = {f.name: f.stat().st_size for f in sorted(map_dir.iterdir())}
    print(f"build {build_s:.1f} s; on disk {sum(sizes.values()) / 2**30:.3f} GiB: "
          + ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in sizes.items()))

    t = time.perf_counter()
    exact = exact_top1(np.load(map_dir / DESCRIPTORS_FILE, mmap_mode="r"), queries)
    print(
        f"exact search of {len(queries)} queries (ground truth) in {time.perf_counter() - t:.1f}"
        f" s; exact top-1 is the revisited place for {np.mean(exact == revisited):.3f} of them"
    )

    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--places",
            str(a.places),
            "--child",
            str(map_dir),
            str(work / "queries.npy"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    r = json.loads(child.stdout.strip().splitlines()[-1])
    times = np.array(r["times_ms"])
    recall = float(np.mean(np.array(r["top1"]) == exact))
    rss_gib = max(r["rss_loaded"], r["rss_after_queries"]) / 2**30
    print(f"index {json.dumps(r['index']['type'])} {json.dumps(r['index']['params'])}")
    print(
        f"load {r['load_s']:.2f} s without checksums, of which {r['places_s']:.2f} s parse"
        f" places.csv; sha256 of every file (load_map's default) {r['verify_s']:.2f} s more; RSS"
        f" growth {r['rss_loaded'] / 2**30:.3f} GiB loaded, {r['rss_after_queries'] / 2**30:.3f}"
        " GiB after the queries (of which mapped map files"
        f" {r['rss_file_after_queries'] / 2**30:.3f} GiB); search p50"
        f" {np.percentile(times, 50):.3f} ms, p95 {np.percentile(times, 95):.3f} ms, p99"
        f" {np.percentile(times, 99):.3f} ms; CPU time per search p50"
        f" {np.percentile(r['cpu_ms'], 50):.3f} ms (wall time beyond it is waiting for a core on"
        " this shared host)"
    )
    temporal_ms = float(np.percentile(r["temporal_ms"], 50))
    print(
        f"temporal filter (hmm) along a walk of {len(r['temporal_ms'])} consecutive places:"
        f" p50 {temporal_ms:.2f} ms, p95 {np.percentile(r['temporal_ms'], 95):.2f} ms per frame;"
        f" whole Localizer.match after the descriptor p50 {np.percentile(r['match_ms'], 50):.2f}"
        f" ms; the filter's ranking applied on {r['temporal_applied']:.2f} of the frames"
    )
    print(
        f"load_s={r['load_s']:.2f} verify_s={r['verify_s']:.2f}"
        f" disk_gib={sum(sizes.values()) / 2**30:.3f}"
    )
    print(
        f"places={a.places} p50_ms={np.percentile(times, 50):.3f} recall_at_1={recall:.4f}"
        f" rss_gib={rss_gib:.3f} build_s={build_s:.1f} temporal_ms={temporal_ms:.2f}"
    )


if __name__ == "__main__":
    main()
