"""
ONNX Runtime backend.

The fast CPU path (fp32 or dynamic int8), CUDA/TensorRT providers where present.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.host import physical_core_count
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.inference.extractor import INPUT_NAME
from vpr_ros.models.spec import ModelSpec

log = logging.getLogger(__name__)


def execution_providers(precision: str, available: list[str], trt_cache_dir: Path) -> list:
    """Return the providers in preference order for ``precision`` among those installed."""
    providers: list = []
    # Dynamic int8 (MatMulInteger) has no GPU kernels: it would bounce between devices.
    if precision != "int8":
        if "TensorrtExecutionProvider" in available:
            providers.append(
                (
                    "TensorrtExecutionProvider",
                    {
                        "trt_fp16_enable": precision == "fp16",
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(trt_cache_dir),
                        "trt_timing_cache_enable": True,
                    },
                )
            )
        if "CUDAExecutionProvider" in available:
            providers.append("CUDAExecutionProvider")
    if precision == "fp16" and not providers:
        raise BackendUnavailableError(
            "fp16 ONNX needs ONNX Runtime's CUDA or TensorRT provider, and only "
            f"{', '.join(available)} is installed; on CPU use precision int8 (fastest) or fp32"
        )
    return providers + ["CPUExecutionProvider"]


class OrtExtractor(DescriptorExtractor):
    backend = "onnxruntime"

    def __init__(
        self,
        spec: ModelSpec,
        fingerprint: str,
        onnx_path: str | Path,
        precision: str = "fp32",
        threads: int | None = None,
    ):
        import onnxruntime as ort

        super().__init__(spec, fingerprint, precision)
        self.onnx_path = Path(onnx_path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or physical_core_count()
        options.inter_op_num_threads = 1  # one image graph: parallelism is inside the ops
        # Idle pool threads sleep instead of spinning: a spinning thread holds a core for
        # milliseconds after each run, which delays the node's DDS and hand-off threads (2-4 ms
        # per wake-up measured on 2 cores) and the build-map prefetch thread; runs cost ~0.1 ms.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = execution_providers(
            precision, ort.get_available_providers(), self.onnx_path.parent / "ort_trt"
        )
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=providers)
        self.providers = self.session.get_providers()
        log.info(
            "onnxruntime %s session for %s (%s, %d threads): %s",
            ort.__version__,
            spec.name,
            precision,
            options.intra_op_num_threads,
            ", ".join(self.providers),
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: batch})[0]
