"""
Export a model to ONNX, convert its precision, and cache the exports by weights fingerprint.

The exported graph takes ``images`` [batch, 3, H, W] float32 (preprocessed) and gives
``descriptors`` [batch, dim]; the batch axis is dynamic.  Precisions:

- fp32: the plain export.
- int8: dynamic quantization (weights int8 per output channel, activations quantized
  at run time), MatMul only: on a ViT the MatMuls are ~all of the time; the
  patch-embedding Conv becomes a slow ConvInteger and gains nothing. Weights use 7 of
  the 8 bits (``reduce_range``): on x86 CPUs without VNNI, ONNX Runtime's u8s8 kernels
  sum pairs of products in saturating int16, and full-range weights overflow it
  (seeded DINOv2-S on an AVX2-only AMD EPYC: min cosine to fp32 0.953 with 8-bit
  weights, 0.9997 with 7). One file then serves every host, VNNI or not.
- fp16: float16 weights and compute with float32 inputs/outputs, for GPU execution
  providers (ONNX Runtime's CPU provider has almost no float16 kernels).
- bf16: not offered. ONNX Runtime's x86 CPU provider has no bfloat16 compute
  (its bf16 fast-math GEMM exists only on ARM64), so a bf16 graph would only add
  casts; use torch bf16 autocast on CPU, or TensorRT BF16 on a GPU.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from vpr_ros.errors import BackendUnavailableError
from vpr_ros.fileio import atomic_output, file_sha256
from vpr_ros.inference.engine_cache import cached_build, default_cache_dir
from vpr_ros.inference.extractor import INPUT_NAME, OUTPUT_NAME
from vpr_ros.models.spec import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
ONNX_PRECISIONS = ("fp32", "fp16", "int8")
INT8_REDUCE_RANGE = True  # 7-bit weights: see the module docstring


def export_onnx(
    model: nn.Module, spec: ModelSpec, path: str | Path, opset: int = DEFAULT_OPSET
) -> Path:
    """Trace ``model`` (fp32, CPU) into an ONNX file with a dynamic batch axis."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().cpu()
    dummy = torch.zeros(2, 3, *spec.input_size)
    # The TorchScript exporter: no onnxscript dependency, and it handles every model
    # here (SDPA, interpolated position embeddings) with a dynamic batch axis.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(path))
    return path


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    per_channel: bool = True,
    op_types: tuple[str, ...] = ("MatMul",),
) -> Path:
    """Dynamic int8 quantization of ``op_types`` (weights int8, activations uint8 at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=list(op_types),
        per_channel=per_channel,
        reduce_range=INT8_REDUCE_RANGE,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},  # activation x activation (attention) stays fp32
    )
    return Path(dst)


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """float16 weights and compute, float32 graph inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
    return Path(dst)


def convert_precision(fp32_path: str | Path, dst: str | Path, precision: str) -> Path:
    """Write the fp32 ONNX file at ``precision`` (one of ONNX_PRECISIONS) to ``dst``."""
    if precision == "int8":
        return quantize_int8(fp32_path, dst)
    if precision == "fp16":
        return convert_fp16(fp32_path, dst)
    shutil.copyfile(fp32_path, dst)
    return Path(dst)


def onnx_cache_path(
    cache_dir: str | Path, spec: ModelSpec, fingerprint: str, precision: str, opset: int
) -> Path:
    return Path(cache_dir) / f"{spec.name}-{fingerprint}-{precision}-opset{opset}.onnx"


def cached_onnx(
    model: nn.Module,
    spec: ModelSpec,
    fingerprint: str,
    precision: str = "fp32",
    cache_dir: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """
    Return the ONNX file for this model + weights + precision, exported on first use and reused.

    Keyed by the weights fingerprint, so new weights never reuse an old export.
    """
    if precision not in ONNX_PRECISIONS:
        raise BackendUnavailableError(
            f"ONNX precision {precision!r} is not supported; choose one of"
            f" {', '.join(ONNX_PRECISIONS)} (for bf16 on CPU use backend torch; ONNX Runtime has"
            " no x86 bf16 kernels)"
        )
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = onnx_cache_path(cache_dir, spec, fingerprint, precision, opset)
    # A sidecar records what the file was built from and its sha256: a damaged or foreign file is
    # rebuilt.
    key = {"model": spec.name, "fingerprint": fingerprint, "precision": precision, "opset": opset}
    if precision == "fp32":
        return cached_build(
            path,
            key,
            lambda tmp: export_onnx(model, spec, tmp, opset),
            f"ONNX export of {spec.name}",
        )
    fp32 = cached_onnx(model, spec, fingerprint, "fp32", cache_dir, opset)
    if precision == "int8":  # int8 files made with full-range weights are rebuilt
        key["reduce_range"] = INT8_REDUCE_RANGE
    return cached_build(
        path,
        {**key, "fp32_sha256": file_sha256(fp32)},
        lambda tmp: convert_precision(fp32, tmp, precision),
        f"ONNX {precision} of {spec.name}",
    )
    return path


def write_onnx(model: nn.Module, spec: ModelSpec, precision: str, out: str | Path) -> Path:
    """
    Export ``model`` at ``precision`` to the file ``out``.

    The file is replaced only when the export succeeds.
    """
    if precision not in ONNX_PRECISIONS:
        raise BackendUnavailableError(
            f"cannot export ONNX at {precision!r}; choose {', '.join(ONNX_PRECISIONS)} "
            "(bf16 runs through backend torch on CPU or a TensorRT engine on GPU)"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmpdir, atomic_output(out) as tmp:
        convert_precision(export_onnx(model, spec, Path(tmpdir) / "fp32.onnx"), tmp, precision)
    return out
