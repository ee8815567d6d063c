"""Pick a model, its weights and a backend, and hand back a DescriptorExtractor."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from torch import nn

from vpr_ros.errors import BackendUnavailableError, ConfigError
from vpr_ros.inference import BACKENDS, PRECISIONS
from vpr_ros.inference.engine_cache import default_cache_dir
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.models.load import load_model
from vpr_ros.models.spec import ModelSpec

log = logging.getLogger(__name__)


def tensorrt_problem() -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    try:
        import tensorrt
    except ImportError as e:
        return f"tensorrt is not installed ({e})"
    import torch

    if not torch.cuda.is_available():
        return f"tensorrt {tensorrt.__version__} imports but torch sees no CUDA GPU"
    return None


def create_extractor(
    model: str,
    weights: str | Path | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    engine_cache_dir: str | Path | None = None,
    calib_dir: str | Path | None = None,
) -> DescriptorExtractor:
    """
    Model + weights on a backend at a precision.

    ``auto`` takes TensorRT where it imports and a CUDA GPU is present; else it measures
    every CPU backend that runs here at ``precision`` (precision ``auto``: at every
    precision within cosine 0.99 of fp32), each in a child process so that one crashing
    library cannot end this one, and takes the fastest, measured once per model,
    weights, CPU and library versions and cached (``vpr_ros.inference.auto``).  ONNX files,
    TensorRT engines and compiled torch packages are built on first use into
    ``engine_cache_dir`` and reused.  ``calib_dir``: representative images for TensorRT
    int8 calibration.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "auto" and backend != "auto":
        raise ConfigError(
            f"precision auto is chosen by measurement with backend auto only; give backend"
            f" {backend} a precision ({', '.join(p for p in PRECISIONS if p != 'auto')})"
        )
    net, spec, fingerprint = load_model(model, weights)
    cache_dir = Path(engine_cache_dir) if engine_cache_dir else default_cache_dir()

    def build(backend: str, precision: str) -> DescriptorExtractor:
        return build_extractor(backend, precision, net, spec, fingerprint, cache_dir, calib_dir)

    if backend != "auto":
        log.info("descriptor backend: %s (%s) for %s", backend, precision, model)
        return build(backend, precision)
    trt_problem = tensorrt_problem()
    if trt_problem is None:
        import tensorrt
        import torch

        precision = "fp16" if precision == "auto" else precision
        log.info(
            "descriptor backend auto -> tensorrt (%s): tensorrt %s and CUDA GPU %s present",
            precision,
            tensorrt.__version__,
            torch.cuda.get_device_name(),
        )
        return build("tensorrt", precision)
    from vpr_ros.inference.auto import Recipe, choose

    log.info("descriptor backend auto: measuring CPU backends (%s)", trt_problem)
    recipe = Recipe(
        model,
        None if weights is None else str(weights),
        str(cache_dir),
        None if calib_dir is None else str(calib_dir),
    )
    return choose(spec, fingerprint, precision, cache_dir, build, recipe)


def build_extractor(
    backend: str,
    precision: str,
    net: nn.Module,
    spec: ModelSpec,
    fingerprint: str,
    cache_dir: Path,
    calib_dir: str | Path | None = None,
) -> DescriptorExtractor:
    """Return ``net`` on the named backend (not auto) at ``precision``."""
    if backend == "torch":
        from vpr_ros.inference.torch_backend import TorchExtractor

        return TorchExtractor(net, spec, fingerprint, precision)
    if backend == "torch-compile":
        from vpr_ros.inference.torch_backend import CompiledTorchExtractor

        return CompiledTorchExtractor(net, spec, fingerprint, precision, cache_dir)
    if backend in ("onnxruntime", "openvino"):
        from vpr_ros.inference.openvino_backend import import_openvino

        try:
            library = (
                import_openvino() if backend == "openvino" else importlib.import_module(backend)
            )
        except ImportError as e:
            raise BackendUnavailableError(
                f"backend {backend} is not installed ({e}); pip install {backend}, or use"
                " backend torch"
            ) from e
        from vpr_ros.inference.onnx_export import cached_onnx

        if backend == "openvino":
            from vpr_ros.inference.openvino_backend import OpenVinoExtractor, inference_precision

            # Refuse an unsupported precision before exporting anything.
            inference_precision(
                precision,
                library.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
            )
            onnx_precision = "fp32" if precision == "bf16" else precision
            onnx_path = cached_onnx(net, spec, fingerprint, onnx_precision, cache_dir)
            return OpenVinoExtractor(spec, fingerprint, onnx_path, precision, cache_dir)
        from vpr_ros.inference.onnxruntime_backend import OrtExtractor

        return OrtExtractor(
            spec, fingerprint, cached_onnx(net, spec, fingerprint, precision, cache_dir), precision
        )
    problem = tensorrt_problem()
    if problem:
        raise BackendUnavailableError(
            f"backend tensorrt cannot run: {problem}. Install TensorRT on a CUDA machine, or use"
            " backend onnxruntime"
        )
    from vpr_ros.inference.onnx_export import cached_onnx
    from vpr_ros.inference.tensorrt_backend import TrtExtractor, cached_engine

    onnx_path = cached_onnx(net, spec, fingerprint, "fp32", cache_dir)
    engine = cached_engine(onnx_path, spec, fingerprint, precision, cache_dir, calib_dir)
    return TrtExtractor(spec, fingerprint, engine, precision)
