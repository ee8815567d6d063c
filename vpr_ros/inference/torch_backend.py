"""
PyTorch backend.

CPU (fp32 or bf16 autocast) and CUDA where present; torch.compile'd bf16 on CPU.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.models.spec import ModelSpec

log = logging.getLogger(__name__)


class TorchExtractor(DescriptorExtractor):
    backend = "torch"

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        fingerprint: str,
        precision: str = "fp32",
        device: str | None = None,
    ):
        super().__init__(spec, fingerprint, precision)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        if precision == "fp16" and self.device.type == "cuda":
            self.model.half()
        elif precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(
                f"torch backend supports fp32, bf16 and fp16 (CUDA), not {precision!r}; use"
                " backend onnxruntime for int8"
            )

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(self.model, batch).float().cpu().numpy()

    @property
    def supports_local_features(self) -> bool:
        return hasattr(self.model, "global_and_local")  # FoLNet

    @torch.inference_mode()
    def _run_with_local(self, batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        descriptors, rows = self._forward(self.model.global_and_local, batch)
        return descriptors.float().cpu().numpy(), [r.float().cpu().numpy() for r in rows]

    def _forward(self, method: Callable[[torch.Tensor], Any], batch: np.ndarray) -> Any:
        """Apply ``method`` to the batch on this extractor's device, at its precision."""
        x = torch.from_numpy(batch).to(self.device)
        if self.precision == "fp16" and self.device.type == "cuda":
            x = x.half()
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        ):
            return method(x)


class CompiledTorchExtractor(DescriptorExtractor):
    """
    bf16 weights and activations, compiled by torch.compile (inductor) for this CPU.

    The fastest CPU path on AMX/AVX512-bf16 CPUs: inductor freezes the weights (prepacked
    for its AMX GEMM kernels, chosen by max-autotune) and fuses the element-wise ops that
    eager bf16 runs one by one.  Compiling takes ~15 s (ViT-S) to ~60 s (ViT-B) at
    start-up, once per process (inductor's on-disk cache shortens later starts), and
    needs a C++ compiler.
    """

    backend = "torch-compile"

    def __init__(
        self, model: nn.Module, spec: ModelSpec, fingerprint: str, precision: str = "bf16"
    ):
        if precision != "bf16":
            raise BackendUnavailableError(
                f"backend torch-compile runs bf16 only, not {precision!r}; use precision bf16, "
                "or backend torch / onnxruntime for other precisions"
            )
        import torch._inductor.config as inductor_config

        super().__init__(spec, fingerprint, precision)
        # A copy: casting to bf16 in place would change the caller's fp32 model.
        bf16_model = copy.deepcopy(model).eval().cpu().to(torch.bfloat16)
        self.model = torch.compile(bf16_model, dynamic=False, mode="max-autotune")
        start = time.perf_counter()
        try:
            # Compilation happens at this first call. Freezing must be set in inductor's
            # config (as torch.compile's option it was ignored: ~25% slower); patching
            # only here leaves the process-wide config as it was.
            with inductor_config.patch(freezing=True):
                self._run(np.zeros((1, 3, *spec.input_size), np.float32))
        # inductor reports a missing compiler etc. as assorted exception types
        except Exception as e:
            raise BackendUnavailableError(
                f"torch.compile of {spec.name} failed ({type(e).__name__}: {e}); it needs a"
                " working C++ compiler (g++). Use backend torch with precision bf16, or backend"
                " onnxruntime with precision int8"
            ) from e
        log.info(
            "torch.compile of %s (bf16, CPU) took %.1f s", spec.name, time.perf_counter() - start
        )

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> np.ndarray:
        # One image at a time: the graph is compiled for batch 1 only, so another batch size
        # never triggers a recompile, and on CPU a ViT gains ~nothing from batching.
        images = torch.from_numpy(batch).to(torch.bfloat16)
        return torch.cat([self.model(image[None]) for image in images]).float().numpy()
