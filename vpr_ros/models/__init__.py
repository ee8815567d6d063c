"""Pure torch modules for place recognition descriptors. No file I/O here."""

from vpr_ros.models.registry import MODELS, ModelSpec, build, spec

__all__ = ["MODELS", "ModelSpec", "build", "spec"]
