"""
TensorRT backend: an engine built from the exported ONNX, cached per GPU / TensorRT / precision.

Written against the TensorRT Python API of TRT 10 (works from 8.6: explicit batch,
named I/O tensors, ``execute_async_v3``).  Buffers are torch CUDA tensors, so no
pycuda is needed.  The engine has one optimisation profile for batch 1..MAX_BATCH
tuned for batch 1 (the node runs one frame at a time).  A timing cache in the cache
directory makes rebuilds (new weights, new precision) take seconds instead of minutes.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import tensorrt as trt
import torch

from vpr_ros.errors import BackendUnavailableError, VprError
from vpr_ros.fileio import atomic_write_bytes, file_sha256
from vpr_ros.inference.engine_cache import EngineCache, EngineKey, default_cache_dir
from vpr_ros.imaging import IMAGE_SUFFIXES, read_rgb
from vpr_ros.inference.extractor import INPUT_NAME, OUTPUT_NAME, DescriptorExtractor
from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.models.spec import ModelSpec

log = logging.getLogger(__name__)

MAX_BATCH = 8
WORKSPACE_BYTES = 2 << 30
CALIBRATION_BATCH = 8
CALIBRATION_MAX_IMAGES = 512
TIMING_CACHE_NAME = "tensorrt.timing_cache"

TRT_LOGGER = trt.Logger(trt.Logger.WARNING)


def calibration_images(image_dir: str | Path) -> list[Path]:
    paths = sorted(p for p in Path(image_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise VprError(
            f"no calibration images (png/jpg) under {image_dir}; pass a folder of images from the"
            " target camera"
        )
    # An even spread over the folder (often a time-ordered sequence) rather than its start.
    step = max(1, len(paths) // CALIBRATION_MAX_IMAGES)
    return paths[::step][:CALIBRATION_MAX_IMAGES]


class ImageFolderCalibrator(trt.IInt8EntropyCalibrator2):
    """
    Feeds preprocessed images from a folder to TensorRT's int8 entropy calibration.

    The resulting scales are cached next to the engines, keyed by the ONNX file and the
    image list, so a rebuild (e.g. for a new TensorRT version) skips calibration.
    """

    def __init__(self, image_dir: str | Path, spec: ModelSpec, cache_path: Path):
        trt.IInt8EntropyCalibrator2.__init__(self)
        from tqdm import tqdm

        self.paths = calibration_images(image_dir)
        self.spec = spec
        self.cache_path = cache_path
        self.next_index = 0
        self.device_batch = torch.empty(
            (CALIBRATION_BATCH, 3, *spec.input_size), dtype=torch.float32, device="cuda"
        )
        self.progress = tqdm(total=len(self.paths), desc="int8 calibration", unit="img")

    def get_batch_size(self) -> int:
        return CALIBRATION_BATCH

    def get_batch(self, names: list[str]) -> list[int] | None:
        if self.next_index >= len(self.paths):
            self.progress.close()
            return None
        chunk = self.paths[self.next_index:self.next_index + CALIBRATION_BATCH]
        self.next_index += len(chunk)
        batch = preprocess_batch([read_rgb(p) for p in chunk], self.spec)
        # TensorRT expects full batches: repeat images to fill the last one.
        batch = batch[np.arange(CALIBRATION_BATCH) % len(batch)]
        self.device_batch.copy_(torch.from_numpy(batch))
        torch.cuda.synchronize()
        self.progress.update(len(chunk))
        return [int(self.device_batch.data_ptr())]

    def read_calibration_cache(self) -> bytes | None:
        if self.cache_path.exists():
            log.info("reusing int8 calibration %s", self.cache_path)
            return self.cache_path.read_bytes()
        return None

    def write_calibration_cache(self, cache) -> None:
        atomic_write_bytes(self.cache_path, bytes(memoryview(cache)))


def calibration_cache_path(cache_dir: Path, onnx_path: Path, image_dir: str | Path) -> Path:
    listing = "\n".join(f"{p}:{p.stat().st_size}" for p in calibration_images(image_dir))
    listing_sha = hashlib.sha256(listing.encode()).hexdigest()[:16]
    return cache_dir / f"calib-{file_sha256(onnx_path)[:16]}-{listing_sha}.cache"


def network_flags() -> int:
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated there); 8.x needs it.
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def engine_key(onnx_path: str | Path, spec: ModelSpec, precision: str) -> EngineKey:
    major, minor = torch.cuda.get_device_capability()
    return EngineKey(
        gpu_name=torch.cuda.get_device_name(),
        compute_capability=f"{major}.{minor}",
        tensorrt_version=trt.__version__,
        precision=precision,
        input_size=tuple(spec.input_size),
        onnx_sha256=file_sha256(onnx_path),
    )


def _set_precision(
    builder, config, precision: str, spec: ModelSpec, calibrator_args: tuple | None
):
    """Builder flags for ``precision``; returns the calibrator (it must outlive the build)."""
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32 descriptors, not TF32 matmuls
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        if not hasattr(trt.BuilderFlag, "BF16"):
            raise BackendUnavailableError(
                f"TensorRT {trt.__version__} has no BF16; use fp16, or TensorRT >= 9"
            )
        config.set_flag(trt.BuilderFlag.BF16)
    elif precision == "int8":
        if calibrator_args is None:
            raise VprError(
                "a TensorRT int8 engine needs calibration images: pass calib_dir (CLI:"
                " --calib-dir) with images from the target camera"
            )
        config.set_flag(trt.BuilderFlag.INT8)
        # layers without int8 kernels fall back to fp16, not fp32
        config.set_flag(trt.BuilderFlag.FP16)
        calib_profile = builder.create_optimization_profile()
        shape = (CALIBRATION_BATCH, 3, *spec.input_size)
        calib_profile.set_shape(INPUT_NAME, shape, shape, shape)
        config.set_calibration_profile(calib_profile)
        calibrator = ImageFolderCalibrator(*calibrator_args)
        config.int8_calibrator = calibrator
        return calibrator
    else:
        raise ValueError(
            f"unknown TensorRT precision {precision!r}; choose fp32, fp16, bf16 or int8"
        )
    return None


def build_engine(
    onnx_path: str | Path,
    spec: ModelSpec,
    precision: str,
    timing_cache_path: str | Path,
    calib_dir: str | Path | None = None,
) -> bytes:
    """Parse the ONNX file and build a serialized engine for batch 1..MAX_BATCH."""
    onnx_path, timing_cache_path = Path(onnx_path), Path(timing_cache_path)
    builder = trt.Builder(TRT_LOGGER)
    network = builder.create_network(network_flags())
    parser = trt.OnnxParser(network, TRT_LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailableError(
            f"TensorRT cannot parse {onnx_path}: {errors}. Re-export with another opset or use"
            " backend onnxruntime"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    h, w = spec.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, 3, h, w), (1, 3, h, w), (MAX_BATCH, 3, h, w))
    config.add_optimization_profile(profile)
    calibrator_args = None
    if calib_dir:
        calibrator_args = (
            calib_dir,
            spec,
            calibration_cache_path(timing_cache_path.parent, onnx_path, calib_dir),
        )
    calibrator = _set_precision(builder, config, precision, spec, calibrator_args)
    timing_cache = config.create_timing_cache(
        timing_cache_path.read_bytes() if timing_cache_path.exists() else b""
    )
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    log.info(
        "building TensorRT %s engine for %s from %s (minutes the first time)",
        precision,
        spec.name,
        onnx_path.name,
    )
    serialized = builder.build_serialized_network(network, config)
    del calibrator
    if serialized is None:
        raise BackendUnavailableError(
            f"TensorRT failed to build a {precision} engine from {onnx_path}; see the TensorRT"
            " messages above"
        )
    atomic_write_bytes(timing_cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def cached_engine(
    onnx_path: str | Path,
    spec: ModelSpec,
    fingerprint: str,
    precision: str,
    cache_dir: str | Path,
    calib_dir: str | Path | None = None,
) -> Path:
    """Return the engine for this ONNX file on this GPU and TensorRT, built if missing or stale."""
    cache_dir = Path(cache_dir)
    key = engine_key(onnx_path, spec, precision)
    cache = EngineCache(cache_dir, f"{spec.name}-{fingerprint}-{precision}")
    return cache.lookup(key) or cache.store(
        key, build_engine(onnx_path, spec, precision, cache_dir / TIMING_CACHE_NAME, calib_dir)
    )


def build_engine_file(
    onnx_path: str | Path,
    spec: ModelSpec,
    precision: str,
    out: str | Path,
    calib_dir: str | Path | None = None,
) -> Path:
    """Build an engine into ``out`` (``.engine`` added when missing) with its key sidecar."""
    out = Path(out)
    cache = EngineCache(out.parent, out.name.removesuffix(".engine"))
    key = engine_key(onnx_path, spec, precision)
    return cache.store(
        key,
        build_engine(
            onnx_path, spec, precision, default_cache_dir() / TIMING_CACHE_NAME, calib_dir
        ),
    )


class TrtExtractor(DescriptorExtractor):
    backend = "tensorrt"

    def __init__(
        self, spec: ModelSpec, fingerprint: str, engine_path: str | Path, precision: str = "fp32"
    ):
        super().__init__(spec, fingerprint, precision)
        self.runtime = trt.Runtime(TRT_LOGGER)  # must outlive the engine
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BackendUnavailableError(
                f"TensorRT cannot load engine {engine_path}; delete it so that it is rebuilt"
            )
        for name in (INPUT_NAME, OUTPUT_NAME):
            if self.engine.get_tensor_dtype(name) != trt.float32:
                raise BackendUnavailableError(
                    f"engine {engine_path} tensor {name!r} is not float32; re-export it with"
                    " vpr-ros export"
                )
        self.max_batch = int(self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0])
        self.context = self.engine.create_execution_context()
        self.device = torch.device("cuda")
        self.stream = torch.cuda.Stream()
        log.info(
            "TensorRT %s engine %s on %s (batch <= %d)",
            precision,
            engine_path,
            torch.cuda.get_device_name(),
            self.max_batch,
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                self._run_chunk(batch[i:i + self.max_batch])
                for i in range(0, len(batch), self.max_batch)
            ]
        )

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        with torch.cuda.stream(self.stream):
            images = torch.from_numpy(chunk).to(self.device)
            self.context.set_input_shape(INPUT_NAME, tuple(images.shape))
            out = torch.empty(
                tuple(self.context.get_tensor_shape(OUTPUT_NAME)),
                dtype=torch.float32,
                device=self.device,
            )
            self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
            self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution failed for a batch of {len(chunk)}")
            self.stream.synchronize()
        return out.cpu().numpy()
