"""
PyTorch backend.

CPU (fp32 or bf16 autocast) and CUDA where present; bf16 compiled ahead of time on CPU.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.inference.engine_cache import cached_build, default_cache_dir, model_cpu_key
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


# Freezing folds the weights into the compiled code (prepacked for the CPU's GEMM kernels);
# max-autotune picks those kernels by timing them on this CPU.
COMPILE_OPTIONS = {"freezing": True, "max_autotune": True}


def compiled_package_key(spec: ModelSpec, fingerprint: str, precision: str) -> dict:
    """Return everything an AOTInductor package depends on: model, weights, shape, torch, CPU."""
    return {
        **model_cpu_key(spec, fingerprint, precision),
        "torch_version": torch.__version__,
        "compile_options": dict(COMPILE_OPTIONS),
    }


def compile_package(model: nn.Module, spec: ModelSpec, out: Path) -> None:
    """Export ``model`` (bf16, batch 1) and compile it with AOTInductor into package ``out``."""
    # A copy: casting to bf16 in place would change the caller's fp32 model.
    bf16_model = copy.deepcopy(model).eval().cpu().to(torch.bfloat16)
    example = torch.zeros(1, 3, *spec.input_size, dtype=torch.bfloat16)
    with torch.inference_mode():
        program = torch.export.export(bf16_model, (example,))
    # Inductor freezes only with grad disabled: with grad on, the weights stay inputs and
    # every Linear runs as plain addmm (~1.6x slower on a ViT-B here).
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        # AOTInductor wants a path ending in .pt2; the caller's ``out`` is a temp name.
        package = Path(tmp) / "model.pt2"
        torch._inductor.aoti_compile_and_package(
            # A copy: AOTInductor adds its own entries to the dict it is given.
            program, package_path=str(package), inductor_configs=dict(COMPILE_OPTIONS)
        )
        shutil.copyfile(package, out)


class CompiledTorchExtractor(DescriptorExtractor):
    """
    bf16 weights and activations, compiled ahead of time by AOTInductor for this CPU.

    The fastest torch path on AMX/AVX512-bf16 CPUs: inductor freezes the weights
    (prepacked for its GEMM kernels, chosen by max-autotune) and fuses the element-wise ops
    that eager bf16 runs one by one.  Compiling takes ~15 s (ViT-S) to minutes (ViT-B) and
    needs a C++ compiler; the compiled package (a .pt2 file with the weights inside) is
    cached in ``cache_dir``, keyed by model, weights, input size, torch version and CPU, so
    later starts only load it (seconds).
    """

    backend = "torch-compile"

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        fingerprint: str,
        precision: str = "bf16",
        cache_dir: str | Path | None = None,
    ):
        if precision != "bf16":
            raise BackendUnavailableError(
                f"backend torch-compile runs bf16 only, not {precision!r}; use precision bf16, "
                "or backend torch / onnxruntime for other precisions"
            )
        super().__init__(spec, fingerprint, precision)
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        path = cache_dir / f"{spec.name}-{fingerprint}-{precision}-aoti.pt2"
        start = time.perf_counter()
        try:
            package = cached_build(
                path,
                compiled_package_key(spec, fingerprint, precision),
                lambda tmp: compile_package(model, spec, tmp),
                f"AOTInductor package of {spec.name}",
            )
            # The C++ loader that torch._inductor.aoti_load_package wraps: that wrapper
            # imports inductor and re-probes the CPU's vector ISA by compiling and loading
            # test programs, seconds at every start; the cache key already pins the CPU.
            self.package = torch._C._aoti.AOTIModelPackageLoader(
                str(package), "model", False, 1, -1  # one runner, on the CPU
            )
        # export and inductor report an unsupported model or a missing compiler as assorted
        # exception types
        except Exception as e:
            raise BackendUnavailableError(
                f"torch-compile of {spec.name} failed ({type(e).__name__}: {e}); it needs a"
                " working C++ compiler (g++) and an exportable model. Use backend torch with"
                " precision bf16, or backend openvino / onnxruntime"
            ) from e
        log.info(
            "torch-compile package of %s (bf16, CPU) ready in %.1f s: %s",
            spec.name,
            time.perf_counter() - start,
            package,
        )

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> np.ndarray:
        # One image at a time: the package is compiled for batch 1, and on CPU a ViT gains
        # ~nothing from batching.
        images = torch.from_numpy(batch).to(torch.bfloat16)
        return torch.cat([self.package.run([image[None]])[0] for image in images]).float().numpy()
