"""
Map building on Ray: many bags extracted in parallel workers, merged into one map.

Each worker is a Ray actor that loads the model once and then extracts whole sources (one task
per bag), returning a ``Shard``: descriptors, frames without their images, what reading skipped,
and the re-ranker's local features where the map stores them. The driver takes the shards in
bag order (so places come in bag order, then time, as in a one-process build) and writes ONE map
through the same atomic writer as ``build_map``; a failed worker or bag fails the build and
leaves no map behind (or the previous one as it was).

Without an address a private Ray is started on loopback only (127.0.0.1, no dashboard, as many
CPU slots as workers) and shut down at the end. With one, the driver joins that cluster: every
node needs this package (same version, same Ray), the model's weights file and the bags at the
same paths (a shared file system); a cluster with token authentication needs RAY_AUTH_MODE=token
and its token on the driver too.

Threads: on each node the actors there split its cores between them (CPU affinity, which both
torch and ONNX Runtime size their thread pools by), so N workers never oversubscribe a node.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tqdm import tqdm

from vpr_ros.errors import ConfigError, VprError
from vpr_ros.maps.build import Shard, ShardProducer, describe_source, extract_shard
from vpr_ros.maps.local_features import FeatureSink

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Placing the actors and loading the model in each: a cluster without room for them fails in
# this time instead of waiting for ever.
START_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ExtractorSpec:
    """What a worker needs to create the extractor itself (a model is loaded, not shipped)."""

    model: str
    weights: str | None = None
    backend: str = "auto"
    precision: str = "fp32"
    engine_cache_dir: str | None = None

    def create(self):
        from vpr_ros.inference.factory import create_extractor

        return create_extractor(
            self.model, self.weights, self.backend, self.precision, self.engine_cache_dir
        )


class ShardWorker:
    """A Ray actor's state: the model (and re-ranker), loaded once on the cores given to it."""

    def __init__(self, spec: ExtractorSpec, rerank: str | None, batch_size: int) -> None:
        self.spec, self.rerank, self.batch_size = spec, rerank, batch_size
        self.extractor = self.reranker = None

    def node(self) -> tuple[str, list[int]]:
        """Return this actor's node id and the cores it may run on."""
        import ray

        return ray.get_runtime_context().get_node_id(), sorted(os.sched_getaffinity(0))

    def load(self, cores: list[int]) -> tuple[dict, dict | None]:
        """
        Keep to ``cores`` and load the model.

        Returns the extractor's and the re-ranker's ``describe()``.
        """
        import torch

        from vpr_ros.rerank import create_reranker

        os.sched_setaffinity(0, cores)  # ONNX Runtime sizes its pool by the affinity
        torch.set_num_threads(len(cores))
        self.extractor = self.spec.create()
        self.reranker = create_reranker(self.rerank, self.extractor) if self.rerank else None
        return self.extractor.describe(), self.reranker.describe() if self.reranker else None

    def extract(self, source) -> Shard:
        gathered: list = []  # the sink on this side: shipped with the shard
        shard = extract_shard(source, self.extractor, self.batch_size, self.reranker, gathered)
        shard.local_features = gathered
        return shard


def _import_ray(local: bool):
    """
    Import Ray; for a local Ray, first make it keep every server on loopback.

    Ray resolves 127.0.0.1 to the host's address unless it is told clusters are off (the switch
    it has for laptops), which must be set before it is imported.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports sent anywhere
    if local:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError as e:
        raise ConfigError(
            f"--workers needs Ray ({e}): pip install -r requirements.txt (it pins ray)"
        ) from None
    return ray


def _share_cores(placements: list[tuple[str, list[int]]]) -> list[list[int]]:
    """Split each node's cores between the actors on it: disjoint sets, at least one core each."""
    on_node: dict[str, list[int]] = defaultdict(list)
    for actor, (node, _) in enumerate(placements):
        on_node[node].append(actor)
    shares: list[list[int]] = [[] for _ in placements]
    for actors in on_node.values():
        cores = placements[actors[0]][1]
        for k, actor in enumerate(actors):
            share = cores[k * len(cores) // len(actors):(k + 1) * len(cores) // len(actors)]
            shares[actor] = share or [cores[k % len(cores)]]
    return shares


class RayExtraction:
    """
    A Ray session with ``workers`` actors holding the model; a context manager.

    ``model`` and ``local_description`` are the workers' extractor's and re-ranker's
    ``describe()`` (the same on every worker, checked); ``shards(sources)`` extracts sources in
    parallel for ``build.write_shards``.
    """

    def __init__(
        self,
        spec: ExtractorSpec,
        workers: int,
        batch_size: int = 8,
        rerank: str | None = None,
        address: str | None = None,
        verbose: bool = False,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"--workers {workers}: give at least 1")
        self.spec, self.workers, self.batch_size, self.rerank = spec, workers, batch_size, rerank
        self.address, self.verbose = address, verbose
        self.model: dict = {}
        self.local_description: dict | None = None
        self._ray = None
        self._actors: list = []

    def __enter__(self) -> RayExtraction:
        self._ray = ray = _import_ray(local=self.address is None)
        self._start()
        try:
            self._load_workers()
        except BaseException:
            ray.shutdown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._ray.shutdown()  # ends the actors; a private Ray stops all its processes

    def _start(self) -> None:
        ray = self._ray
        quiet = {
            "include_dashboard": False,
            "logging_level": logging.INFO if self.verbose else logging.ERROR,
            "log_to_driver": self.verbose,
        }
        try:
            if self.address is None:
                # "local": a new private instance even where RAY_ADDRESS names a cluster
                ray.init(
                    address="local", num_cpus=self.workers, _node_ip_address=LOOPBACK, **quiet
                )
            else:
                ray.init(address=self.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = (
                f"the Ray cluster at {self.address}"
                if self.address
                else "a local Ray on 127.0.0.1"
            )
            raise VprError(
                f"cannot start {where} ({e}); for a cluster, run `ray start --head"
                " --node-ip-address HEAD_IP` on the head first and pass --ray-address"
                " HEAD_IP:6379; where the cluster uses token authentication (Ray's default), set"
                " RAY_AUTH_MODE=token with the cluster's token in ~/.ray/auth_token or"
                " RAY_AUTH_TOKEN"
            ) from None
        if self.address is None and (ip := ray.util.get_node_ip_address()) != LOOPBACK:
            ray.shutdown()
            raise VprError(
                f"the local Ray came up on {ip}, not {LOOPBACK} (Ray was imported before"
                " vpr_ros could keep it on loopback); run build-map in a fresh process"
            )
        log.info("Ray %s: %s", ray.__version__, ray.cluster_resources())

    def _load_workers(self) -> None:
        ray = self._ray
        actor = ray.remote(num_cpus=1, max_restarts=0)(ShardWorker)
        self._actors = [
            actor.options(scheduling_strategy="SPREAD").remote(
                self.spec, self.rerank, self.batch_size
            )
            for _ in range(self.workers)
        ]
        placing = [a.node.remote() for a in self._actors]
        ready, _ = ray.wait(placing, num_returns=len(placing), timeout=START_TIMEOUT_S)
        if len(ready) < len(placing):
            raise VprError(
                f"only {len(ready)} of {self.workers} Ray workers started within"
                f" {START_TIMEOUT_S:.0f} s: the cluster has fewer free CPUs"
                f" ({ray.available_resources().get('CPU', 0):g}); ask for fewer --workers"
            )
        shares = _share_cores(ray.get(placing))
        with _worker_errors("loading the model"):
            described = ray.get(
                [a.load.remote(cores) for a, cores in zip(self._actors, shares)],
                timeout=START_TIMEOUT_S,
            )
        if any(d != described[0] for d in described):
            raise VprError(
                "the Ray workers loaded different models or weights (nodes with different files"
                " at the --weights path?): give every node the same weights file"
            )
        self.model, self.local_description = described[0]
        log.info("%d Ray workers on cores %s", self.workers, shares)

    def shards(self, sources: Sequence) -> ShardProducer:
        """
        Extract ``sources`` on the workers, one task each; yield their shards in source order.

        The producer for ``build.write_shards``: each shard's local features go to the map's
        sink as the shard arrives.
        """

        def produce(sink: FeatureSink | None) -> Iterator[Shard]:
            from ray.util import ActorPool

            pool = ActorPool(self._actors)
            results = pool.map(lambda a, source: a.extract.remote(source), list(sources))
            frames = sum(len(s) for s in sources)
            with tqdm(total=frames, desc=f"building map on {self.workers} Ray workers",
                      unit="img", dynamic_ncols=True) as bar:
                for source in sources:
                    with _worker_errors(f"extracting {_name(source)}"):
                        shard = next(results)
                    for features in shard.local_features if sink is not None else ():
                        sink.append(features)
                    shard.local_features = None
                    bar.update(len(source))
                    yield shard

        return produce


@contextmanager
def _worker_errors(doing: str) -> Iterator[None]:
    """Re-raise a worker's VprError as itself; any other failure as a VprError saying where."""
    import ray.exceptions as rex

    try:
        yield
    except rex.RayError as error:
        cause = error.cause if isinstance(error, rex.RayTaskError) else None
        if isinstance(cause, VprError):
            raise cause from None
        what = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
        raise VprError(
            f"a Ray worker failed {doing} ({what.strip().splitlines()[-1]}); nothing was written"
            " (a previous map at --out is unchanged). Run with -v for the worker's log; a worker"
            " killed for memory needs fewer --workers per node"
        ) from None


def _name(source) -> str:
    return ", ".join(str(d.get("source")) for d in describe_source(source))
