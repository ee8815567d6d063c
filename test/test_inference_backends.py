"""
ONNX export, ONNX Runtime backend, backend choice and the TensorRT engine cache key logic.

Real images from ../shared/data; models built with seeded random weights (no official
weights can be downloaded here).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import shared_path

from vpr_ros.errors import BackendUnavailableError, ConfigError
from vpr_ros.fileio import atomic_write_bytes
from vpr_ros.inference.engine_cache import EngineCache, EngineKey
from vpr_ros.models.load import state_dict_fingerprint
from vpr_ros.inference.factory import create_extractor, tensorrt_problem
from vpr_ros.imaging import read_rgb
from vpr_ros.inference.onnx_export import cached_onnx
from vpr_ros.inference.parity import compare_descriptors
from vpr_ros.inference.onnxruntime_backend import OrtExtractor, physical_core_count
from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.inference.torch_backend import CompiledTorchExtractor
from vpr_ros.models import registry


def real_image_paths() -> list[Path]:
    nordland = sorted(shared_path("data", "nordland_trimmed", "winter").glob("*.png"))[::1200]
    tokyo = shared_path("data", "tokyo_pair")
    return nordland + [tokyo / "query.jpg", tokyo / "database.png"]


@pytest.fixture(scope="module")
def real_images() -> list[np.ndarray]:
    return [read_rgb(p) for p in real_image_paths()]


def seeded(name: str):
    """Model with seeded random weights, its spec and fingerprint."""
    spec = registry.spec(name)  # a renamed preset fails here, it is not skipped
    torch.manual_seed(0)
    model = registry.build(name)
    return model, spec, state_dict_fingerprint(name, model.state_dict())


def torch_descriptors(model, spec, images) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(preprocess_batch(images, spec))).numpy()


@pytest.fixture(scope="module")
def dinov2_s(tmp_path_factory):
    model, spec, fingerprint = seeded("dinov2-s")
    return model, spec, fingerprint, tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def dinov2_s_fp32(dinov2_s, real_images):
    model, spec, fingerprint, cache = dinov2_s
    ort_fp32 = OrtExtractor(
        spec, fingerprint, cached_onnx(model, spec, fingerprint, "fp32", cache), "fp32"
    )
    return ort_fp32, torch_descriptors(model, spec, real_images)


def test_dinov2_s_onnx_fp32_matches_torch_on_real_images(dinov2_s_fp32, real_images):
    ort_fp32, expected = dinov2_s_fp32
    report = compare_descriptors(expected, ort_fp32.extract(real_images))
    assert report.max_abs_diff < 1e-4, report
    assert report.min_cosine > 0.9999, report


def test_dinov2_s_int8_stays_within_cosine_099_of_fp32(dinov2_s, dinov2_s_fp32, real_images):
    model, spec, fingerprint, cache = dinov2_s
    path = cached_onnx(model, spec, fingerprint, "int8", cache)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    # MatMuls quantized, patch conv left fp32
    assert "MatMulInteger" in ops and "ConvInteger" not in ops
    int8 = OrtExtractor(spec, fingerprint, path, "int8").extract(real_images)
    report = compare_descriptors(dinov2_s_fp32[1], int8)
    assert report.max_abs_diff > 1e-5, "int8 gave fp32 results: nothing was quantized"
    assert report.min_cosine >= 0.99, report


def test_dynamic_batch_gives_the_same_per_image_descriptors(dinov2_s_fp32, real_images):
    ort_fp32 = dinov2_s_fp32[0]
    batch = preprocess_batch(real_images[:3], ort_fp32.spec)
    together = ort_fp32.extract_preprocessed(batch)
    alone = np.concatenate([ort_fp32.extract_preprocessed(batch[i:i + 1]) for i in range(3)])
    assert together.shape == (3, ort_fp32.dim)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_session_uses_physical_cores_and_full_graph_optimisation(dinov2_s_fp32):
    import onnxruntime as ort

    options = dinov2_s_fp32[0].session.get_session_options()
    assert options.intra_op_num_threads == physical_core_count()
    assert 1 <= physical_core_count() <= os.cpu_count()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert dinov2_s_fp32[0].providers == ["CPUExecutionProvider"]


def test_onnx_export_is_cached_by_fingerprint_precision_and_opset(dinov2_s, dinov2_s_fp32):
    model, spec, fingerprint, cache = dinov2_s
    path = cached_onnx(model, spec, fingerprint, "fp32", cache)
    assert fingerprint in path.name and "fp32" in path.name and "opset17" in path.name
    mtime = path.stat().st_mtime_ns
    assert cached_onnx(model, spec, fingerprint, "fp32", cache) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not re-exported
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["scicevpr-b", "mutualvpr-b"])
def test_vpr_model_onnx_export_matches_torch(name, tmp_path, real_images):
    model, spec, fingerprint = seeded(name)
    images = real_images[-1:]  # Tokyo day image; one keeps the ViT-B export test short
    ort_fp32 = OrtExtractor(
        spec, fingerprint, cached_onnx(model, spec, fingerprint, "fp32", tmp_path), "fp32"
    )
    report = compare_descriptors(torch_descriptors(model, spec, images), ort_fp32.extract(images))
    assert report.max_abs_diff < 1e-4, report
    assert report.min_cosine > 0.9999, report


def test_onnxruntime_refuses_bf16_with_a_fix(tmp_path):
    with pytest.raises(BackendUnavailableError, match="bf16.*backend torch"):
        create_extractor(
            "raw-pixels", backend="onnxruntime", precision="bf16", engine_cache_dir=tmp_path
        )


def test_tensorrt_unavailable_is_reported_with_a_fix(tmp_path):
    if tensorrt_problem() is None:
        pytest.skip("TensorRT runs here")
    with pytest.raises(BackendUnavailableError, match="use backend onnxruntime"):
        create_extractor("raw-pixels", backend="tensorrt", engine_cache_dir=tmp_path)


def test_dinov2_s_torch_compile_bf16_stays_within_cosine_099_of_fp32(
    dinov2_s, dinov2_s_fp32, real_images
):
    model, spec, fingerprint, cache = dinov2_s
    compiled = CompiledTorchExtractor(model, spec, fingerprint, "bf16", cache)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is not cast
    got = compiled.extract(real_images)  # several images through the batch-1 package
    assert got.shape == (len(real_images), spec.dim)
    report = compare_descriptors(dinov2_s_fp32[1], got)
    assert report.max_abs_diff > 1e-5, "bf16 gave fp32 results: nothing ran in bf16"
    assert report.min_cosine >= 0.99, report


def test_torch_compile_package_is_reused_by_a_second_start(tmp_path, real_images, caplog):
    with caplog.at_level(logging.INFO, logger="vpr_ros.inference.engine_cache"):
        first = create_extractor(
            "raw-pixels", backend="torch-compile", precision="bf16", engine_cache_dir=tmp_path
        )
    assert isinstance(first, CompiledTorchExtractor) and first.backend == "torch-compile"
    [package] = tmp_path.glob("raw-pixels-*-bf16-aoti.pt2")
    key = json.loads(package.with_name(package.name + ".json").read_text())
    assert key["torch_version"] == torch.__version__ and key["input_size"] == [24, 32]
    assert {"cpu_model", "cpu_flags", "fingerprint", "precision"} <= set(key)
    # exactly what a fresh process computes (AOTInductor once added entries to the options)
    assert key["compile_options"] == {"freezing": True, "max_autotune": True}
    mtime = package.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vpr_ros.inference.engine_cache"):
        second = create_extractor(
            "raw-pixels", backend="torch-compile", precision="bf16", engine_cache_dir=tmp_path
        )
    assert "AOTInductor package of raw-pixels cache hit" in caplog.text
    assert package.stat().st_mtime_ns == mtime  # loaded, not compiled again
    expected = create_extractor("raw-pixels", backend="torch").extract(real_images)
    # bf16 rounding only
    np.testing.assert_allclose(second.extract(real_images), expected, atol=1e-2)
    with pytest.raises(BackendUnavailableError, match="bf16 only.*use precision bf16"):
        create_extractor("raw-pixels", backend="torch-compile", precision="fp32")


def test_openvino_backend_sends_no_telemetry(tmp_path):
    """
    The openvino backend never loads OpenVINO's telemetry.

    Outside CI, with no opt-out file in $HOME, ``import openvino`` would send an event to the
    network.
    """
    script = (
        "import sys, threading\n"
        "from vpr_ros.inference.factory import create_extractor\n"
        f"create_extractor('raw-pixels', backend='openvino', engine_cache_dir={str(tmp_path)!r})\n"
        "print('openvino_telemetry' in sys.modules, threading.active_count())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(tmp_path)  # no opt-out file here
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "1"]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_dinov2_s_openvino_stays_within_cosine_099_of_fp32(
    dinov2_s, dinov2_s_fp32, real_images, precision
):
    from vpr_ros.inference.openvino_backend import OpenVinoExtractor, import_openvino

    openvino = import_openvino()

    model, spec, fingerprint, cache = dinov2_s
    if precision == "bf16" and "BF16" not in openvino.Core().get_property(
        "CPU", "OPTIMIZATION_CAPABILITIES"
    ):
        with pytest.raises(BackendUnavailableError, match="AVX512-BF16 or AMX"):
            OpenVinoExtractor(spec, fingerprint, "unused.onnx", precision)
        return
    onnx_precision = "int8" if precision == "int8" else "fp32"
    onnx_path = cached_onnx(model, spec, fingerprint, onnx_precision, cache)
    extractor = OpenVinoExtractor(spec, fingerprint, onnx_path, precision, cache)
    report = compare_descriptors(dinov2_s_fp32[1], extractor.extract(real_images))
    assert report.min_cosine >= (0.9999 if precision == "fp32" else 0.99), report
    if precision != "fp32":
        assert report.max_abs_diff > 1e-5, f"{precision} gave fp32 results"
    assert any((cache / "openvino").iterdir())  # compiled model cached for the next start


def test_openvino_refuses_fp16_and_precision_auto_needs_backend_auto(tmp_path):
    with pytest.raises(BackendUnavailableError, match="openvino runs fp32, bf16, int8"):
        create_extractor(
            "raw-pixels", backend="openvino", precision="fp16", engine_cache_dir=tmp_path
        )
    with pytest.raises(ConfigError, match="precision auto .* backend auto only"):
        create_extractor("raw-pixels", backend="openvino", precision="auto")


def test_fingerprint_and_descriptors_identical_across_backends(tmp_path, real_images):
    on_torch = create_extractor("raw-pixels", backend="torch")
    on_ort = create_extractor("raw-pixels", backend="onnxruntime", engine_cache_dir=tmp_path)
    assert on_torch.fingerprint == on_ort.fingerprint
    assert on_torch.describe() == on_ort.describe()
    np.testing.assert_allclose(
        on_torch.extract(real_images), on_ort.extract(real_images), atol=1e-6
    )


def test_export_command_writes_onnx_and_prints_parity_once(tmp_path, capsys):
    from vpr_ros.cli import main

    images = shared_path("data", "gardens_point_sample", "night")
    out = tmp_path / "raw.onnx"
    assert (
        main(["export", "--model", "raw-pixels", "--out", str(out), "--check-images", str(images)])
        == 0
    )
    assert out.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "10 images" in printed and "min cosine 1.000000" in printed
    assert printed.count("wrote") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.onnx"]  # no temp leftovers


# --- TensorRT engine cache (pure Python) ---

KEY = EngineKey(
    gpu_name="NVIDIA Jetson AGX Orin",
    compute_capability="8.7",
    tensorrt_version="10.3.0",
    precision="fp16",
    input_size=(224, 224),
    onnx_sha256="ab" * 32,
)


def test_engine_cache_reuses_an_engine_whose_key_matches(tmp_path):
    cache = EngineCache(tmp_path, "dinov2-s-123-fp16")
    assert cache.lookup(KEY) is None
    path = cache.store(KEY, b"engine bytes")
    assert cache.lookup(EngineKey(**KEY.to_json() | {"input_size": (224, 224)})) == path
    assert path.read_bytes() == b"engine bytes"
    assert json.loads(cache.key_path.read_text())["tensorrt_version"] == "10.3.0"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dinov2-s-123-fp16.engine",
        "dinov2-s-123-fp16.engine.json",
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
        {"tensorrt_version": "10.4.0"},
        {"precision": "int8"},
        {"input_size": (322, 322)},
        {"onnx_sha256": "cd" * 32},
    ],
)
def test_engine_cache_rebuilds_and_names_every_differing_field(tmp_path, caplog, change):
    cache = EngineCache(tmp_path, "model")
    cache.store(KEY, b"old")
    new_key = EngineKey(**(KEY.to_json() | {"input_size": KEY.input_size} | change))
    with caplog.at_level(logging.WARNING, logger="vpr_ros.inference.engine_cache"):
        assert cache.lookup(new_key) is None
    reasons = cache.stale_reasons(new_key)
    assert sorted(r.split(":")[0] for r in reasons) == sorted(change)
    for field, value in change.items():
        assert f"{field}: {getattr(KEY, field)!r} -> {value!r}" in caplog.text
    cache.store(new_key, b"new")
    assert cache.lookup(new_key) == cache.engine_path and cache.engine_path.read_bytes() == b"new"


def test_engine_without_readable_key_is_rebuilt(tmp_path, caplog):
    cache = EngineCache(tmp_path, "model")
    cache.store(KEY, b"engine")
    cache.key_path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert cache.lookup(KEY) is None
    assert "sidecar" in caplog.text
    cache.key_path.unlink()
    assert cache.lookup(KEY) is None


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]
