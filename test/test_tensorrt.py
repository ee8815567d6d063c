"""
TensorRT backend: the real build and run path.

Runs only where tensorrt and a CUDA GPU are present.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

trt = pytest.importorskip(
    "tensorrt", reason="tensorrt is not installed (it cannot be pip-installed on CPU machines)"
)
if not torch.cuda.is_available():
    pytest.skip("TensorRT needs a CUDA GPU and torch sees none", allow_module_level=True)

from conftest import shared_path  # noqa: E402
from vpr_ros.inference.engine_cache import EngineCache  # noqa: E402
from vpr_ros.models.load import state_dict_fingerprint  # noqa: E402
from vpr_ros.inference.factory import choose_backend  # noqa: E402
from vpr_ros.imaging import read_rgb  # noqa: E402
from vpr_ros.inference.onnx_export import cached_onnx  # noqa: E402
from vpr_ros.inference.parity import compare_descriptors  # noqa: E402
from vpr_ros.inference.preprocess import preprocess_batch  # noqa: E402
from vpr_ros.inference.tensorrt_backend import (  # noqa: E402
    TrtExtractor, cached_engine, engine_key,
)
from vpr_ros.models import registry  # noqa: E402


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    paths = sorted(shared_path("data", "nordland_trimmed", "winter").glob("*.png"))[::300]
    return [read_rgb(p) for p in paths] + [
        read_rgb(shared_path("data", "tokyo_pair", "query.jpg"))
    ]


@pytest.fixture(scope="module")
def dinov2_s(tmp_path_factory):
    torch.manual_seed(0)
    model = registry.build("dinov2-s")
    spec = registry.spec("dinov2-s")
    fingerprint = state_dict_fingerprint("dinov2-s", model.state_dict())
    cache = tmp_path_factory.mktemp("trt_cache")
    return model, spec, fingerprint, cache, cached_onnx(model, spec, fingerprint, "fp32", cache)


def expected(model, spec, images) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(preprocess_batch(images, spec))).numpy()


def test_auto_picks_tensorrt():
    backend, why = choose_backend("fp32")
    assert backend == "tensorrt" and trt.__version__ in why


@pytest.mark.parametrize(
    "precision, min_cosine", [("fp32", 0.9999), ("fp16", 0.999), ("bf16", 0.99)]
)
def test_engine_matches_torch_and_is_reused(dinov2_s, images, precision, min_cosine, caplog):
    if precision == "bf16" and not hasattr(trt.BuilderFlag, "BF16"):
        pytest.skip(f"TensorRT {trt.__version__} has no BF16")
    model, spec, fingerprint, cache, onnx_path = dinov2_s
    engine = cached_engine(onnx_path, spec, fingerprint, precision, cache)
    assert (
        EngineCache(cache, engine.name.removesuffix(".engine")).stale_reasons(
            engine_key(onnx_path, spec, precision)
        )
        == []
    )
    extractor = TrtExtractor(spec, fingerprint, engine, precision)
    report = compare_descriptors(expected(model, spec, images), extractor.extract(images))
    assert report.min_cosine >= min_cosine, report
    # batch > 1 and batch > MAX_BATCH give the same per-image rows as batch 1
    batch = preprocess_batch(images, spec)
    one_by_one = np.concatenate(
        [extractor.extract_preprocessed(batch[i:i + 1]) for i in range(len(batch))]
    )
    np.testing.assert_allclose(extractor.extract_preprocessed(batch), one_by_one, atol=1e-3)
    mtime = engine.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        assert cached_engine(onnx_path, spec, fingerprint, precision, cache) == engine
    assert engine.stat().st_mtime_ns == mtime and "cache hit" in caplog.text
    assert (cache / "tensorrt.timing_cache").stat().st_size > 0


def test_int8_engine_with_calibration_folder(dinov2_s, images):
    model, spec, fingerprint, cache, onnx_path = dinov2_s
    calib_dir = shared_path("data", "nordland_trimmed", "summer")
    engine = cached_engine(onnx_path, spec, fingerprint, "int8", cache, calib_dir=calib_dir)
    assert list(cache.glob("calib-*.cache")), "calibration scales were not cached"
    report = compare_descriptors(
        expected(model, spec, images),
        TrtExtractor(spec, fingerprint, engine, "int8").extract(images),
    )
    assert report.min_cosine >= 0.98, report
