"""
A corrupted or foreign file in the engine cache is detected and rebuilt, never loaded.

(Issue 9, faults.) TensorRT itself is absent on these machines, so engines are opaque bytes
here; the ONNX files are real exports run by ONNX Runtime.
"""

import json
import logging
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from vpr_ros.inference.engine_cache import CachedFile, EngineCache, EngineKey, cached_build
from vpr_ros.inference.onnx_export import export_onnx
from vpr_ros.models.load import load_model

KEY = EngineKey("NVIDIA Jetson AGX Orin", "8.7", "10.3.0", "fp16", (224, 224), "ab" * 32)


def _flip_a_bit(path, offset=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["bit flip", "truncated", "emptied"])
def test_corrupted_engine_is_rebuilt_with_the_reason(tmp_path, caplog, damage):
    cache = EngineCache(tmp_path, "model")
    cache.store(KEY, b"engine bytes " * 100)
    assert cache.lookup(KEY) == cache.engine_path
    if damage == "bit flip":
        _flip_a_bit(cache.engine_path)
    else:
        cache.engine_path.write_bytes(
            cache.engine_path.read_bytes()[: 0 if damage == "emptied" else 50]
        )
    with caplog.at_level(logging.WARNING, logger="vpr_ros.inference.engine_cache"):
        assert cache.lookup(KEY) is None
    assert "model.engine was altered or cut short" in caplog.text
    cache.store(KEY, b"rebuilt")
    assert cache.lookup(KEY) == cache.engine_path and cache.engine_path.read_bytes() == b"rebuilt"


def test_foreign_engine_is_rebuilt(tmp_path, caplog):
    other = EngineCache(tmp_path / "other", "model")
    other.store(
        EngineKey(**KEY.to_json() | {"input_size": (322, 322), "onnx_sha256": "cd" * 32}),
        b"another model's engine",
    )
    cache = EngineCache(tmp_path, "model")
    shutil.copy(other.engine_path, cache.engine_path)  # an engine dropped in without its sidecar
    with caplog.at_level(logging.WARNING):
        assert cache.lookup(KEY) is None
    assert "sidecar" in caplog.text
    shutil.copy(other.key_path, cache.key_path)  # ... and with the sidecar of what it really is
    assert sorted(r.split(":")[0] for r in cache.stale_reasons(KEY)) == [
        "input_size",
        "onnx_sha256",
    ]


def test_sidecar_without_digest_is_stale(tmp_path):
    cache = EngineCache(tmp_path, "model")
    cache.store(KEY, b"engine")
    # a sidecar from before digests were recorded
    cache.key_path.write_text(json.dumps(KEY.to_json()))
    assert "sidecar" in cache.stale_reasons(KEY)[0]


@pytest.fixture(scope="module")
def raw_pixels():
    return load_model("raw-pixels")


def _run(onnx_path, spec):
    x = np.random.default_rng(0).standard_normal((2, 3, *spec.input_size)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("damage", ["truncated", "bit flip", "foreign"])
def test_damaged_onnx_export_is_detected_and_rebuilt(tmp_path, raw_pixels, damage):
    net, spec, fingerprint = raw_pixels
    path = tmp_path / f"{spec.name}-{fingerprint}-fp32.onnx"
    key = {"model": spec.name, "fingerprint": fingerprint, "precision": "fp32"}
    exports = []

    def export(tmp):
        exports.append(tmp)
        export_onnx(net, spec, tmp)

    cached_build(path, key, export, "ONNX export")
    expected = _run(path, spec)
    # intact: reused
    assert cached_build(path, key, export, "ONNX export") == path and len(exports) == 1
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "bit flip":
        _flip_a_bit(path, offset=40)
    else:
        foreign = tmp_path / "foreign.onnx"  # another model's export, sidecar and all
        cached_build(foreign, {**key, "model": "other"}, export, "ONNX export")
        shutil.copy(foreign, path)
        shutil.copy(CachedFile(foreign).sidecar, CachedFile(path).sidecar)
        assert "model: 'other' -> 'raw-pixels'" in CachedFile(path).stale_reasons(key)
    assert cached_build(path, key, export, "ONNX export") == path
    assert len(exports) == (3 if damage == "foreign" else 2)  # rebuilt, not loaded
    np.testing.assert_array_equal(_run(path, spec), expected)


def test_backend_rebuilds_a_damaged_cached_export(tmp_path):
    from vpr_ros.inference.factory import create_extractor

    images = [
        np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(2)
    ]
    expected = create_extractor("raw-pixels", None, "onnxruntime", "fp32", tmp_path).extract(
        images
    )
    (cached,) = tmp_path.glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[:300])
    np.testing.assert_array_equal(
        create_extractor("raw-pixels", None, "onnxruntime", "fp32", tmp_path).extract(images),
        expected,
    )
