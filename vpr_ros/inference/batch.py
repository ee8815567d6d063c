"""
Descriptors of many frames in batches, reading and preprocessing on a thread ahead of inference.

Shared by map building and evaluation.
"""

from __future__ import annotations

import queue
import threading
from contextlib import closing
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.inference.preprocess import preprocess
from vpr_ros.models.spec import ModelSpec

_DONE = object()  # the producer's last queue entry


def prefetch(items: Iterable, depth: int = 16) -> Iterator:
    """
    Iterate ``items`` on a background thread, at most ``depth`` items ahead of the consumer.

    Whatever producing an item costs (reading a bag, decoding, preprocessing) then overlaps the
    consumer's inference; the threads share the GIL only for Python-level work, as sqlite, the
    decoders and cv2 release it. An exception raised while producing is raised here, after the
    items produced before it. When the consumer stops early (an error, Ctrl-C, a closed
    generator), the thread stops before its next item and closes ``items`` (a bag reader's file)
    and this generator returns only once it has.

    No producer thread may outlive the interpreter's finalization: one still inside OpenCV
    then aborts the process ("terminate called without an active exception", seen on Ctrl-C
    in CI). So callers close this generator with ``contextlib.closing`` rather than leave it to
    the garbage collector, and a Ctrl-C landing inside ``Thread.start`` still stops the thread
    (it checks ``stop`` before each item, the first included).
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            while not stop.is_set():
                try:
                    item = next(iterator)
                except StopIteration:
                    put((_DONE, None))
                    return
                if not put((item, None)):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            put((_DONE, err))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="vpr-prefetch", daemon=True)
    try:
        thread.start()
        while True:
            item, err = q.get()
            if err is not None:
                raise err
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        if thread.is_alive():  # not yet alive: it will see ``stop`` before its first item
            thread.join()


def _batches(
    frames: Iterable, spec: ModelSpec, batch_size: int
) -> Iterator[tuple[list, np.ndarray]]:
    """
    Yield (frames, their network inputs stacked) in batches, each frame's image dropped.

    The descriptor is all a map keeps, so memory stays bounded on long bags and the prefetch
    queue holds only the small network inputs.
    """
    group: list = []
    inputs: list[np.ndarray] = []
    for frame in frames:
        inputs.append(preprocess(frame.image, spec))
        frame.image = None
        group.append(frame)
        if len(group) == batch_size:
            yield group, np.stack(inputs)
            group, inputs = [], []
    if group:
        yield group, np.stack(inputs)


def extract_frames(
    frames: Iterable,
    extractor: DescriptorExtractor,
    batch_size: int = 8,
    total: int | None = None,
    desc: str = "extracting",
) -> tuple[np.ndarray, list]:
    """
    Descriptors for every frame, in batches, with a progress bar.

    Returns (descriptors, frames).
    """
    descriptors, kept = [], []
    # Reading, decoding, preprocessing and batching on the prefetch thread (a few batches
    # ahead): this thread runs forward passes only.
    batches = closing(prefetch(_batches(frames, extractor.spec, batch_size), depth=4))
    with batches as prefetched, tqdm(
        total=total, desc=desc, unit="img", dynamic_ncols=True
    ) as bar:
        for group, inputs in prefetched:
            descriptors.append(extractor.extract_preprocessed(inputs))
            kept.extend(group)
            bar.update(len(group))
    dim = extractor.dim
    return (np.concatenate(descriptors) if descriptors else np.zeros((0, dim), np.float32)), kept
