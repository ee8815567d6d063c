"""
One ``auto`` candidate measured in a child process of its own.

Measuring every backend in one process segfaulted on an Intel AMX host (issue 17): two
libraries' CPU kernels in one process are a combination nobody tests.  Here a candidate
that crashes or hangs takes down only its child; the parent sees why and leaves it out.

The parent starts ``python -c`` with its own ``sys.path`` and one end of a socket pair.
Over it go pickled messages:

    child  -> parent  READY           imports done
    parent -> child   Job             build the extractor, describe the probe images
    child  -> parent  Built|Refused   the descriptors and build time, or why it cannot run
    parent -> child   RUN             one timed batch-1 run (repeated)
    child  -> parent  float           its seconds
    parent closes the connection      the child exits

A crash shows as the end of the stream and a negative exit status (the signal); a hang as
no answer within the timeout, after which the child is killed.

Fault injection, to test this and to replay a field report: ``VPR_ROS_AUTO_FAULT`` holds
comma-separated ``BACKEND:PRECISION:FAULT:STAGE`` entries (FAULT abort, segv or hang; STAGE
build or run, the timed runs), e.g. ``onnxruntime:int8:segv:run``.  Only the child reads it.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from vpr_ros.errors import BackendUnavailableError, ConfigError
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.inference.factory import build_extractor
from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.models.load import load_model

FAULT_ENV = "VPR_ROS_AUTO_FAULT"
FAULTS = ("abort", "segv", "hang")
STAGES = ("build", "run")
READY = "ready"  # the child's first message: imports done, reading
RUN = "run"
# After the stream ends, how long a dying child may take to be reaped before it is killed.
EXIT_WAIT_S = 30.0
BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]);"
    " from vpr_ros.inference.auto_child import child_main; child_main(int(sys.argv[2]))"
)


@dataclass(frozen=True)
class Recipe:
    """What a child needs to build a candidate: create_extractor's model arguments."""

    model: str
    weights: str | None
    cache_dir: str
    calib_dir: str | None = None

    def build(self, backend: str, precision: str) -> DescriptorExtractor:
        net, spec, fingerprint = load_model(self.model, self.weights)
        return build_extractor(
            backend, precision, net, spec, fingerprint, Path(self.cache_dir), self.calib_dir
        )


@dataclass(frozen=True)
class Job:
    """The first message to a child: which candidate, on which images, with how many threads."""

    recipe: Recipe
    backend: str
    precision: str
    images: list[np.ndarray]
    torch_threads: int


@dataclass(frozen=True)
class Built:
    """The candidate runs: its descriptors of the job's images and seconds to build it."""

    descriptors: np.ndarray
    build_s: float


@dataclass(frozen=True)
class Refused:
    """The candidate cannot run; ``unavailable``: not installed or not supported here."""

    reason: str
    unavailable: bool


class ChildFailed(Exception):
    """The child crashed, hung or exited; the message says how and in which stage."""


def faults_for(backend: str, precision: str, spec: str) -> dict[str, str]:
    """Map each STAGE to the FAULT that ``spec`` (FAULT_ENV's value) injects into this pair."""
    faults = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        parts = entry.split(":")
        if len(parts) != 4 or parts[2] not in FAULTS or parts[3] not in STAGES:
            raise ConfigError(
                f"{FAULT_ENV} entry {entry!r} is not BACKEND:PRECISION:FAULT:STAGE with FAULT"
                f" one of {', '.join(FAULTS)} and STAGE one of {', '.join(STAGES)}; fix or"
                f" unset {FAULT_ENV}"
            )
        if (parts[0], parts[1]) == (backend, precision):
            faults[parts[3]] = parts[2]
    return faults


def inject(fault: str | None) -> None:
    """Crash or hang the way ``fault`` says (never returns), or do nothing for None."""
    if fault == "abort":
        os.abort()
    if fault == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if fault == "hang":
        threading.Event().wait()


def child_main(fd: int) -> None:
    """Serve one Job on connection ``fd`` until the parent closes it."""
    faulthandler.enable()  # a real crash leaves its Python stack on stderr
    logging.basicConfig(
        level=logging.WARNING, format="auto child: %(levelname)s %(name)s: %(message)s"
    )
    import torch

    conn = Connection(fd)
    conn.send(READY)
    job: Job = conn.recv()
    torch.set_num_threads(job.torch_threads)
    faults = faults_for(job.backend, job.precision, os.environ.get(FAULT_ENV, ""))
    inject(faults.get("build"))
    start = time.perf_counter()
    try:
        extractor = job.recipe.build(job.backend, job.precision)
        descriptors = extractor.extract(job.images)
        build_s = time.perf_counter() - start
        batch = preprocess_batch(job.images[:1], extractor.spec)
        extractor.extract_preprocessed(batch)  # warm-up at the timed shape: first-call costs
    except BackendUnavailableError as e:
        conn.send(Refused(str(e), unavailable=True))
        return
    except Exception as e:  # noqa: BLE001 - whatever a library raises excludes only this pair
        conn.send(Refused(f"{type(e).__name__}: {e}", unavailable=False))
        return
    conn.send(Built(descriptors, build_s))
    while True:
        try:
            conn.recv()
        except EOFError:
            return
        inject(faults.get("run"))
        start = time.perf_counter()
        extractor.extract_preprocessed(batch)
        conn.send(time.perf_counter() - start)


class CandidateChild:
    """The parent's handle on one child process."""

    def __init__(self) -> None:
        self.conn, child_end = Pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", BOOT, json.dumps(sys.path), str(child_end.fileno())],
            pass_fds=(child_end.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        child_end.close()
        self.ready = False

    def request(self, message: object, timeout_s: float, stage: str) -> object:
        """
        Send ``message`` and return the answer.

        ChildFailed when the child ends or gives no answer within ``timeout_s`` (then it is
        killed); ``stage`` names what it was doing, for the reason.
        """
        try:
            # A Job outgrows the socket buffer and send() has no timeout: send only to a child
            # that has finished its imports and reads.
            if not self.ready:
                if not self.conn.poll(timeout_s):
                    self.kill()
                    raise ChildFailed(f"hung: not started within {timeout_s:.0f} s; killed")
                self.ready = self.conn.recv() == READY
            self.conn.send(message)
            if self.conn.poll(timeout_s):
                return self.conn.recv()
        except (EOFError, OSError):  # the stream ended: the child is gone
            raise ChildFailed(self._ended(stage)) from None
        self.kill()
        raise ChildFailed(f"hung: no answer within {timeout_s:.0f} s while {stage}; killed")

    def _ended(self, stage: str) -> str:
        self.conn.close()
        try:
            status = self.process.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return f"closed its connection while {stage} but did not exit; killed"
        if status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = str(-status)
            return f"crashed with signal {name} while {stage}"
        return f"exited with status {status} while {stage}"

    def close(self) -> None:
        """End the child: closing the connection lets a healthy one exit; kill what remains."""
        self.conn.close()
        try:
            self.process.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.conn.close()
        self.process.kill()
        self.process.wait()
