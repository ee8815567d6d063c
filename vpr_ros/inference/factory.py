"""Pick a model, its weights and a backend, and hand back a DescriptorExtractor."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from vpr_ros.errors import WeightsError
from vpr_ros.inference.extractor import DescriptorExtractor, state_dict_fingerprint
from vpr_ros.models import registry

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


def _call(ref: str, *args, **kwargs):
    module_name, func_name = ref.split(":")
    return getattr(importlib.import_module(module_name), func_name)(*args, **kwargs)


def load_model(name: str, weights: str | Path | None = None):
    """Build the named model and put its weights in. Returns (model, spec, fingerprint)."""
    spec = registry.spec(name)
    model = registry.build(name)
    if weights:
        from vpr_ros.models.checkpoints import load_official

        load_official(model, weights)
    elif spec.shipped_weights:
        model.load_state_dict(_call(spec.shipped_weights), strict=True)
    elif spec.needs_weights:
        raise WeightsError(
            f"model {name!r} needs its official weights and none were given. "
            f"Download them from {spec.weights_source or 'the authors release page'} "
            f"and pass the file with --weights (CLI) or the 'weights' parameter (node)."
        )
    model.eval()
    return model, spec, state_dict_fingerprint(name, model.state_dict())


def create_extractor(
    model: str,
    weights: str | Path | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    engine_cache_dir: str | Path | None = None,
) -> DescriptorExtractor:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    net, spec, fingerprint = load_model(model, weights)
    from vpr_ros.inference.torch_backend import TorchExtractor

    # Other backends (onnxruntime, tensorrt) plug in here; torch is always available.
    if backend in ("auto", "torch"):
        log.info("descriptor backend: torch (%s) for %s", precision, model)
        return TorchExtractor(net, spec, fingerprint, precision)
    raise ValueError(f"backend {backend!r} is not available in this build yet")
