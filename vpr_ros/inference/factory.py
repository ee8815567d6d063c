"""Pick a model, its weights and a backend, and hand back a DescriptorExtractor."""

from __future__ import annotations

import logging
from pathlib import Path

from vpr_ros.errors import BackendUnavailableError, ConfigError
from vpr_ros.inference import BACKENDS, PRECISIONS
from vpr_ros.inference.engine_cache import default_cache_dir
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.models.load import load_model

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


def choose_backend(precision: str) -> tuple[str, str]:
    """Return the backend ``auto`` means here for ``precision``, and why."""
    trt_problem = tensorrt_problem()
    if trt_problem is None:
        import tensorrt
        import torch

        return (
            "tensorrt",
            f"tensorrt {tensorrt.__version__} and CUDA GPU {torch.cuda.get_device_name()} present",
        )
    if precision == "bf16":
        return (
            "torch",
            f"{trt_problem}; ONNX Runtime has no bf16 CPU kernels, torch bf16 autocast has",
        )
    try:
        import onnxruntime
    except ImportError as e:
        return "torch", f"{trt_problem}; onnxruntime is not installed ({e})"
    return "onnxruntime", f"{trt_problem}; onnxruntime {onnxruntime.__version__} imports"


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

    ``auto`` takes TensorRT where it imports and a CUDA GPU is present, else ONNX Runtime,
    else torch (bf16 goes to torch: ONNX Runtime has no bf16 CPU path). ONNX files and
    TensorRT engines are built on first use into ``engine_cache_dir`` and reused.
    ``torch-compile`` (bf16 only) is the fastest CPU path on bf16-capable x86 CPUs; it
    compiles for up to a minute at start-up, so ``auto`` never picks it.
    ``calib_dir``: representative images for TensorRT int8 calibration.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        )
    if backend == "auto":
        backend, why = choose_backend(precision)
        log.info("descriptor backend auto -> %s (%s): %s", backend, precision, why)
    net, spec, fingerprint = load_model(model, weights)
    cache_dir = Path(engine_cache_dir) if engine_cache_dir else default_cache_dir()
    if backend == "torch":
        from vpr_ros.inference.torch_backend import TorchExtractor

        log.info("descriptor backend: torch (%s) for %s", precision, model)
        return TorchExtractor(net, spec, fingerprint, precision)
    if backend == "torch-compile":
        from vpr_ros.inference.torch_backend import CompiledTorchExtractor

        log.info("descriptor backend: torch-compile (%s) for %s; compiling", precision, model)
        return CompiledTorchExtractor(net, spec, fingerprint, precision)
    if backend == "onnxruntime":
        try:
            from vpr_ros.inference.onnxruntime_backend import OrtExtractor
        except ImportError as e:
            raise BackendUnavailableError(
                f"backend onnxruntime is not installed ({e}); pip install onnxruntime, or use"
                " backend torch"
            ) from e
        from vpr_ros.inference.onnx_export import cached_onnx

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
