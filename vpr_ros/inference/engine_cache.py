"""Cache of built inference artefacts (TensorRT engines, exported ONNX files).

A TensorRT engine only runs on the GPU model, TensorRT version and build settings it
was built for, so each engine has a JSON sidecar holding its ``EngineKey``.  ``lookup``
hands back the engine only when every field matches and otherwise says which fields
differ, so a stale engine is rebuilt for a stated reason instead of failing at load.

Everything here is pure Python (no tensorrt import) so it is tested on any machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from vpr_ros.fileio import atomic_write_bytes

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


class EngineCache:
    """Engines in ``directory`` named ``<stem>.engine`` with a ``<stem>.engine.json`` key sidecar."""

    def __init__(self, directory: str | Path, stem: str):
        self.directory = Path(directory)
        self.engine_path = self.directory / f"{stem}.engine"
        self.key_path = self.directory / f"{stem}.engine.json"

    def stale_reasons(self, key: EngineKey) -> list[str]:
        """Why the cached engine cannot serve ``key``; empty when it can."""
        if not self.engine_path.exists():
            return [f"no engine at {self.engine_path}"]
        try:
            cached = EngineKey.from_json(json.loads(self.key_path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            return [f"key sidecar {self.key_path} is missing or unreadable ({e})"]
        return cached.differences(key)

    def lookup(self, key: EngineKey) -> Path | None:
        """The engine path when its recorded key equals ``key``, else None (and log why)."""
        reasons = self.stale_reasons(key)
        if not reasons:
            log.info("TensorRT engine cache hit: %s", self.engine_path)
            return self.engine_path
        if self.engine_path.exists():
            log.warning("rebuilding TensorRT engine %s because %s", self.engine_path, "; ".join(reasons))
        else:
            log.info("building TensorRT engine %s (none cached yet)", self.engine_path)
        return None

    def store(self, key: EngineKey, engine: bytes) -> Path:
        # Drop the old sidecar first: a crash between the two writes then leaves an
        # engine without a key (rebuilt next time), never a new engine under an old key.
        self.key_path.unlink(missing_ok=True)
        atomic_write_bytes(self.engine_path, engine)
        atomic_write_bytes(self.key_path, json.dumps(key.to_json(), indent=2).encode())
        return self.engine_path
