"""
`vpr-ros build-map --workers N`: bags extracted on Ray workers, merged into one map.

A private Ray on loopback (each test starts and stops one: about 15-30 s on a busy host).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from vpr_ros.cli import main
from vpr_harness.demo.route import CAMERA_TOPIC, GPS_TOPIC, write_demo_bags
from vpr_ros.errors import BagError
from vpr_ros.fileio import PARTIAL, file_sha256
from vpr_ros.search.faiss_index import IndexConfig
from vpr_ros.maps.append import append_to_map
from vpr_ros.maps.build import write_shards
from vpr_ros.maps.distributed import ExtractorSpec, RayExtraction
from vpr_ros.maps.mapdir import load_map
from vpr_ros.maps.sources import BagSource

pytestmark = pytest.mark.slow

MODEL = "raw-pixels"  # a real extractor that costs nothing: the distribution is under test
TEST_LIMIT_S = 240  # a hung worker or Ray start fails the test instead of stalling the suite


@contextmanager
def time_limit(seconds: int = TEST_LIMIT_S) -> Iterator[None]:
    """Fail the test, instead of stalling the suite, when its body runs over ``seconds``."""
    fired = []

    def expire(signum, frame):
        fired.append(True)
        signal.raise_signal(signal.SIGINT)  # a waiting ray.get gives way to KeyboardInterrupt only

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    except BaseException:
        if fired:
            pytest.fail(f"ran over {seconds} s (a Ray start or worker hung)")
        raise
    else:
        if fired:  # the CLI turned the interrupt into its exit status
            pytest.fail(f"ran over {seconds} s (a Ray start or worker hung)")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> tuple[Path, Path]:
    """Two drives of the demo route (30 and 26 frames), a month apart."""
    return write_demo_bags(tmp_path_factory.mktemp("bags"), frames=30)


def _build(*args: str) -> int:
    return main(
        [
            "build-map",
            "--image-topic",
            CAMERA_TOPIC,
            "--pose-topic",
            GPS_TOPIC,
            "--model",
            MODEL,
            *map(str, args),
        ]
    )


def test_two_workers_build_the_one_process_map(bags, tmp_path):
    first, second = bags
    one, two = tmp_path / "one", tmp_path / "two"
    assert _build("--bag", first, "--bag", second, "--out", one) == 0
    with time_limit():
        assert _build("--bag", first, "--bag", second, "--workers", "2", "--out", two) == 0
    a, b = load_map(one), load_map(two)  # both verify
    assert len(a) == len(b) == 56
    np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-6)
    assert list(a.places) == list(b.places)  # bag order, then time
    assert a.manifest.sources == b.manifest.sources
    assert a.model == b.model and a.manifest.index == b.manifest.index


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue  # exited meanwhile
    return inodes


def _bound_addresses(inodes: set[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of listening TCP and bound UDP sockets with these inodes."""
    addresses = []
    for table, v6 in (("tcp", False), ("tcp6", True), ("udp", False), ("udp6", True)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in inodes or (table.startswith("tcp") and state != "0A"):
                continue
            raw = bytes.fromhex(local.split(":")[0])
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(raw)
            if v6 and address.ipv4_mapped:
                address = address.ipv4_mapped
            addresses.append(address)
    return addresses


def _snapshot(map_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(map_dir)): file_sha256(p) for p in map_dir.rglob("*") if p.is_file()
    }


def test_append_on_workers_and_failures_leave_no_map_or_the_old_one(bags, tmp_path):
    first, second = bags
    damaged = tmp_path / "damaged"
    shutil.copytree(second, damaged)
    sources = {bag: BagSource([bag], CAMERA_TOPIC, GPS_TOPIC) for bag in (first, second, damaged)}
    # damaged after the driver listed it: the worker that opens it fails
    db = next(damaged.glob("*.db3"))
    with open(db, "r+b") as f:
        f.seek(db.stat().st_size // 2)
        f.write(os.urandom(1 << 18))
    whole, grown = tmp_path / "whole", tmp_path / "grown"
    assert _build("--bag", first, "--bag", second, "--out", whole) == 0
    assert _build("--bag", first, "--out", grown) == 0
    out = tmp_path / "maps" / "map"
    with time_limit(), RayExtraction(ExtractorSpec(MODEL), workers=2) as ray:
        addresses = _bound_addresses(_socket_inodes(_descendants(os.getpid()) | {os.getpid()}))
        assert addresses and all(a.is_loopback for a in addresses), addresses

        # a fresh build with a bad bag: a clear error, no map
        with pytest.raises(BagError, match=f"rosbag {damaged} is damaged"):
            write_shards(out, ray.shards([sources[first], sources[damaged]]), ray.model,
                         IndexConfig())
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if PARTIAL in p.name]

        # appending on the workers gives the map built from both bags at once
        new = [sources[second]]
        append_to_map(grown, ray.shards(new), ray.model, new[0].describe())
        a, b = load_map(grown), load_map(whole)
        np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-6)
        assert list(a.places) == list(b.places)

        # a failed append leaves the map as it was
        before = _snapshot(grown)
        with pytest.raises(BagError, match=f"rosbag {damaged} is damaged"):
            append_to_map(
                grown, ray.shards([sources[damaged]]), ray.model, sources[damaged].describe()
            )
        assert _snapshot(grown) == before
    assert not [p for p in tmp_path.iterdir() if PARTIAL in p.name]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_build_joins_a_running_cluster_by_address(bags, tmp_path):
    """`ray start --head` on loopback, then build-map --ray-address: the cluster path, here."""
    first, second = bags
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps this one-node cluster on 127.0.0.1
        "RAY_AUTH_MODE": "token",  # the driver authenticates with the head's token
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    port = _free_port()
    # short: Ray's unix sockets live under it
    ray_tmp = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
         "--temp-dir", str(ray_tmp)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not _listening(port):
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head failed"
            time.sleep(0.5)
        out, reference = tmp_path / "map", tmp_path / "reference"
        built = subprocess.run(
            [sys.executable, "-m", "vpr_ros.cli", "build-map", "--ray-address",
             f"127.0.0.1:{port}", "--workers", "2", "--bag", str(first), "--bag", str(second),
             "--image-topic", CAMERA_TOPIC, "--pose-topic", GPS_TOPIC, "--model", MODEL,
             "--out", str(out)],
            env=env, capture_output=True, text=True, timeout=TEST_LIMIT_S,
        )
        assert built.returncode == 0, built.stderr[-3000:]
    finally:
        head.terminate()  # --block stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert _build("--bag", first, "--bag", second, "--out", reference) == 0
    a, b = load_map(out), load_map(reference)
    np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-6)
    assert list(a.places) == list(b.places)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
