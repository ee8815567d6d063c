"""
OpenVINO backend: the exported ONNX file compiled by OpenVINO for this CPU.

Precisions: fp32; bf16 (OpenVINO's inference-precision hint, on CPUs with AVX512-BF16 or
AMX); int8 (the int8 ONNX file of ``onnx_export``, run with OpenVINO's int8 kernels).
OpenVINO caches its compiled model in ``cache_dir/openvino`` (keyed by OpenVINO itself on
the model, device and settings), so a later start skips most of the compile.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.host import physical_core_count
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.models.spec import ModelSpec

log = logging.getLogger(__name__)

OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")


def import_openvino() -> ModuleType:
    """
    Import OpenVINO without its model-conversion tools.

    ``import openvino`` also imports ``openvino.tools.ovc`` (``convert_model``; unused here,
    models arrive as ONNX files), and that import sends a telemetry event to the network unless
    the user has opted out or ``CI=true``. A robot's node does not phone home: a None entry in
    ``sys.modules`` makes that one import fail, which OpenVINO's ``__init__`` tolerates.
    """
    sys.modules.setdefault("openvino.tools.ovc", None)
    import openvino

    return openvino


def inference_precision(precision: str, capabilities: list[str]) -> str:
    """Return OpenVINO's inference-precision hint for ``precision`` on a CPU's ``capabilities``."""
    if precision not in OPENVINO_PRECISIONS:
        raise BackendUnavailableError(
            f"backend openvino runs {', '.join(OPENVINO_PRECISIONS)}, not {precision!r}; fp16"
            " needs a GPU backend (tensorrt)"
        )
    if precision == "bf16":
        if "BF16" not in capabilities:
            raise BackendUnavailableError(
                "backend openvino with bf16 needs a CPU with AVX512-BF16 or AMX (OpenVINO lists"
                f" {', '.join(capabilities)}); use precision int8 or fp32"
            )
        return "bf16"
    # int8 graphs keep their non-quantized ops in f32, like fp32 graphs.
    return "f32"


class OpenVinoExtractor(DescriptorExtractor):
    backend = "openvino"

    def __init__(
        self,
        spec: ModelSpec,
        fingerprint: str,
        onnx_path: str | Path,
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
    ):
        ov = import_openvino()
        super().__init__(spec, fingerprint, precision)
        core = ov.Core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        hint = inference_precision(precision, capabilities)
        if cache_dir:
            core.set_property({"CACHE_DIR": str(Path(cache_dir) / "openvino")})
        self.threads = physical_core_count()
        compiled = core.compile_model(
            str(onnx_path),
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": self.threads,
                "INFERENCE_PRECISION_HINT": hint,
            },
        )
        self.request = compiled.create_infer_request()
        log.info(
            "openvino %s model for %s (%s, inference precision %s, %d threads)",
            ov.get_version(),
            spec.name,
            precision,
            compiled.get_property("INFERENCE_PRECISION_HINT"),
            self.threads,
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        # The request's output buffer is reused by the next call: hand back a copy.
        return self.request.infer({0: batch})[0].copy()
