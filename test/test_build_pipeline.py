"""
The map-building pipeline: bag reading, decoding and preprocessing ahead of the network.

They run on a prefetch thread, the network on the caller's. Order is kept, the queue is
bounded, a producer's error reaches the caller after the items before it, a consumer that stops
early stops the thread and closes the source, and the descriptors equal the extractor's own
batched extraction of the same images.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vpr_ros.errors import BagError
from vpr_ros.inference.factory import create_extractor
from vpr_ros.inference.batch import extract_frames, prefetch
from vpr_ros.maps.build import build_map
from vpr_ros.maps.sources import Frame


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "vpr-prefetch"]


def test_items_come_in_order_then_the_producers_error():
    def items():
        yield from range(40)
        raise BagError("bag cut short")

    got = []
    with pytest.raises(BagError, match="cut short"):
        for item in prefetch(items(), depth=4):
            got.append(item)
    assert got == list(range(40))
    assert not _prefetch_threads()


def test_the_producer_runs_at_most_depth_ahead():
    produced = []

    def items():
        for i in range(100):
            produced.append(i)
            yield i

    stream = prefetch(items(), depth=4)
    assert next(stream) == 0
    time.sleep(0.3)  # ample time to run ahead, were it unbounded
    # the queue's 4, the one the producer waits to put, and the one taken
    assert len(produced) <= 6
    stream.close()


def test_a_consumer_that_stops_stops_the_thread_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    for i in prefetch(endless(), depth=2):
        if i == 3:
            break  # the generator is closed here, as on an error or Ctrl-C in the loop
    assert closed.is_set()
    assert not _prefetch_threads()


def test_ctrl_c_inside_thread_start_leaves_no_producer(monkeypatch):
    """A KeyboardInterrupt raised as the thread starts: nothing keeps producing into shutdown."""
    produced = []

    def counted():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    real_start = threading.Thread.start

    def start_then_interrupt(thread):
        real_start(thread)
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        next(prefetch(counted(), depth=4))
    monkeypatch.undo()
    assert not _prefetch_threads()  # joined before the interrupt left the generator
    stopped_at = len(produced)
    time.sleep(0.2)
    assert len(produced) == stopped_at


def _frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    return [
        Frame(i, i, rng.integers(0, 256, (480, 640, 3), np.uint8), np.array([i, 0.0, 0.0]),
              None, None, None, "test", "/camera")
        for i in range(n)
    ]


def test_descriptors_equal_the_extractors_own_batches():
    extractor = create_extractor("baseline", backend="torch")
    frames = _frames(11)
    images = [f.image for f in frames]
    expected = np.concatenate([extractor.extract(images[i:i + 4]) for i in range(0, 11, 4)])
    descriptors, kept = extract_frames(frames, extractor, batch_size=4)
    assert [f.index for f in kept] == list(range(11))
    assert all(f.image is None for f in kept)  # dropped once preprocessed
    np.testing.assert_allclose(descriptors, expected, rtol=0, atol=1e-6)


class _CutShortSource:
    """Five frames, then the bag reader's error (as a truncated bag gives mid-way)."""

    def __init__(self) -> None:
        self.frames = _frames(5)

    def __len__(self) -> int:
        return 10

    def __iter__(self):
        yield from self.frames
        raise BagError("rosbag cut is damaged or truncated; re-record it")


def test_a_reading_error_fails_the_build_and_writes_nothing(tmp_path: Path):
    extractor = create_extractor("baseline", backend="torch")
    with pytest.raises(BagError, match="truncated"):
        build_map(_CutShortSource(), extractor, tmp_path / "map", batch_size=2)
    assert not (tmp_path / "map").exists()
    assert not _prefetch_threads()
