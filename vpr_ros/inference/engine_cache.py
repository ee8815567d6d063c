"""
Cache of built inference artefacts (TensorRT engines, exported ONNX files).

Every cached file has a JSON sidecar (``<file>.json``) holding the key it was built for
and the sha256 it had when written.  A lookup hands the file back only when the key
matches and the content is still what was written; otherwise it says why (a differing
key field, a missing or unreadable sidecar, a file altered or cut short since) and the
caller rebuilds it.  So a stale, corrupted or foreign file in the cache costs a rebuild
with a logged reason, never a crash in the backend that would load it.

A TensorRT engine only runs on the GPU model, TensorRT version and build settings it
was built for, so its key is an ``EngineKey``.

Everything here is pure Python (no tensorrt import) so it is tested on any machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vpr_ros.fileio import atomic_output, atomic_write_text, file_sha256
from vpr_ros.host import cpu_flags, cpu_model
from vpr_ros.models.spec import ModelSpec

log = logging.getLogger(__name__)

CACHE_ENV = "VPR_ROS_CACHE_DIR"


def default_cache_dir() -> Path:
    """$VPR_ROS_CACHE_DIR, else $XDG_CACHE_HOME/vpr_ros, else ~/.cache/vpr_ros."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vpr_ros"


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on."""

    gpu_name: str
    compute_capability: str  # "8.7" (Jetson Orin), "9.0" (H100)
    tensorrt_version: str
    precision: str
    input_size: tuple[int, int]  # (height, width)
    onnx_sha256: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"input_size": list(self.input_size)}

    @classmethod
    def from_json(cls, data: dict) -> EngineKey:
        fields = {f.name for f in dataclasses.fields(cls)}
        if set(data) != fields:
            raise ValueError(f"engine key fields {sorted(data)} != expected {sorted(fields)}")
        return cls(**(data | {"input_size": tuple(data["input_size"])}))

    def differences(self, other: EngineKey) -> list[str]:
        """'field: mine -> other' for every field that differs."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


def cpu_key() -> dict:
    """Return the key fields of an artefact only valid on this CPU (compiled code, timings)."""
    return {"cpu_model": cpu_model(), "cpu_flags": list(cpu_flags())}


def model_cpu_key(spec: ModelSpec, fingerprint: str, precision: str) -> dict:
    """Return the key fields of an artefact for one model, weights and precision on this CPU."""
    return {
        "model": spec.name,
        "fingerprint": fingerprint,
        "input_size": list(spec.input_size),
        "precision": precision,
        **cpu_key(),
    }


SHA256_FIELD = "sha256"  # in a sidecar beside the key's fields: the file's digest when written


class CachedFile:
    """A cached file and its ``<file>.json`` sidecar: the key it was built for and its sha256."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.sidecar = self.path.with_name(self.path.name + ".json")

    def recorded_key(self) -> dict:
        """
        Return the key the file was built for.

        ValueError/OSError when the sidecar is missing or unreadable.
        """
        data = json.loads(self.sidecar.read_text())
        if not isinstance(data, dict) or not isinstance(data.get(SHA256_FIELD), str):
            raise ValueError(f"no {SHA256_FIELD!r} recorded")
        return {k: v for k, v in data.items() if k != SHA256_FIELD}

    def altered(self) -> list[str]:
        """Empty when the file still has the sha256 recorded when it was written."""
        recorded = json.loads(self.sidecar.read_text())[SHA256_FIELD]
        if file_sha256(self.path) != recorded:
            return [
                f"{self.path.name} was altered or cut short after it was written (sha256 differs"
                " from its sidecar)"
            ]
        return []

    def stale_reasons(
        self, key: dict, differences: Callable[[dict], list[str]] | None = None
    ) -> list[str]:
        """
        Why the cached file cannot serve ``key``; empty when it can.

        ``differences`` compares the recorded key with the wanted one (default: field by field).
        """
        if not self.path.exists():
            return [f"no file at {self.path}"]
        try:
            recorded = self.recorded_key()
            diff = (
                differences(recorded)
                if differences
                else [
                    f"{k}: {recorded.get(k)!r} -> {key.get(k)!r}"
                    for k in sorted(set(recorded) | set(key))
                    if recorded.get(k) != key.get(k)
                ]
            )
        except (OSError, ValueError, TypeError, KeyError) as e:
            return [f"key sidecar {self.sidecar} is missing or unreadable ({e})"]
        return diff or self.altered()

    def lookup(
        self, key: dict, what: str, differences: Callable[[dict], list[str]] | None = None
    ) -> Path | None:
        """Return the path when it can serve ``key``, else None (and log why)."""
        reasons = self.stale_reasons(key, differences)
        if not reasons:
            log.info("%s cache hit: %s", what, self.path)
            return self.path
        if self.path.exists():
            log.warning("rebuilding %s %s because %s", what, self.path, "; ".join(reasons))
        else:
            log.info("building %s %s (none cached yet)", what, self.path)
        return None

    def store(self, key: dict, write: Callable[[Path], None]) -> Path:
        """
        ``write(tmp)`` makes the file.

        It replaces ``path`` atomically and its sidecar records ``key``.
        """
        # Drop the old sidecar first: a crash between the two writes then leaves a file without
        # a key (rebuilt next time), never a new file under an old key.
        self.sidecar.unlink(missing_ok=True)
        with atomic_output(self.path) as tmp:
            write(tmp)
        atomic_write_text(
            self.sidecar, json.dumps(key | {SHA256_FIELD: file_sha256(self.path)}, indent=2)
        )
        return self.path


def cached_build(path: str | Path, key: dict, build: Callable[[Path], None], what: str) -> Path:
    """
    ``path`` when it was built for ``key`` and is intact.

    Else ``build(tmp)`` makes it anew (atomically).
    """
    cached = CachedFile(path)
    return cached.lookup(key, what) or cached.store(key, build)


class EngineCache:
    """
    Engines in ``directory`` named ``<stem>.engine``.

    Each with a ``<stem>.engine.json`` sidecar (key + sha256).
    """

    def __init__(self, directory: str | Path, stem: str):
        self.directory = Path(directory)
        self.file = CachedFile(self.directory / f"{stem}.engine")
        self.engine_path = self.file.path
        self.key_path = self.file.sidecar

    def stale_reasons(self, key: EngineKey) -> list[str]:
        """Why the cached engine cannot serve ``key``; empty when it can."""
        if not self.engine_path.exists():
            return [f"no engine at {self.engine_path}"]
        return self.file.stale_reasons(
            key.to_json(), lambda recorded: EngineKey.from_json(recorded).differences(key)
        )

    def lookup(self, key: EngineKey) -> Path | None:
        """
        Return the engine path when its recorded key equals ``key`` and it is intact.

        Else None (and log why).
        """
        return self.file.lookup(
            key.to_json(),
            "TensorRT engine",
            lambda recorded: EngineKey.from_json(recorded).differences(key),
        )

    def store(self, key: EngineKey, engine: bytes) -> Path:
        return self.file.store(key.to_json(), lambda tmp: tmp.write_bytes(engine))
