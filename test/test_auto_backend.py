"""
``auto`` measures the CPU backends once per model, weights, CPU and library versions.

The measurement runs on raw-pixels (tiny, so the test is fast); the choice is read back
from the cache directory by later calls and is redone when its key no longer matches.
"""

from __future__ import annotations

import importlib
import json
import logging

import numpy as np
import pytest

from vpr_ros.inference.auto import MIN_COSINE, REFERENCE, candidates, choice_key, choice_path
from vpr_ros.inference.factory import create_extractor, tensorrt_problem
from vpr_ros.models.load import load_model

pytestmark = pytest.mark.skipif(
    tensorrt_problem() is None, reason="TensorRT and a GPU are present: auto picks tensorrt"
)


def auto(cache, caplog, precision="fp32", model="raw-pixels"):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vpr_ros.inference"):
        return create_extractor(model, backend="auto", precision=precision, engine_cache_dir=cache)


def test_auto_measures_once_and_then_reads_its_cached_choice(tmp_path, caplog):
    first = auto(tmp_path, caplog)
    assert "measured now" in caplog.text and "descriptor backend auto ->" in caplog.text
    assert (first.backend, first.precision) in candidates("fp32")
    [choice_file] = tmp_path.glob("raw-pixels-*-fp32-auto.json")
    choice = json.loads(choice_file.read_text())
    measured = {(r["backend"], r["precision"]) for r in choice["measured"]}
    assert REFERENCE in measured and (first.backend, first.precision) in measured
    assert len(measured) >= 2, "only torch was measured: onnxruntime is a requirement"
    best = choice["best"]
    assert best["ms"] == min(r["ms"] for r in choice["measured"])
    assert all(r["min_cosine"] >= MIN_COSINE for r in choice["measured"])
    mtime = choice_file.stat().st_mtime_ns

    second = auto(tmp_path, caplog)
    assert "measured earlier" in caplog.text and "measured now" not in caplog.text
    assert choice_file.stat().st_mtime_ns == mtime
    assert (second.backend, second.precision) == (first.backend, first.precision)
    images = [np.full((48, 64, 3), v, np.uint8) for v in (30, 120, 220)]
    reference = create_extractor("raw-pixels", backend="torch").extract(images)
    assert (reference * second.extract(images)).sum(1).min() >= MIN_COSINE


def test_a_fixed_precision_is_kept_although_fp32_is_measured(tmp_path, caplog):
    extractor = auto(tmp_path, caplog, precision="int8")
    assert extractor.precision == "int8" and extractor.backend in ("onnxruntime", "openvino")
    [choice_file] = tmp_path.glob("raw-pixels-*-int8-auto.json")
    measured = json.loads(choice_file.read_text())["measured"]
    assert {(r["backend"], r["precision"]) for r in measured} <= {REFERENCE, *candidates("int8")}


def test_a_choice_measured_on_another_cpu_is_measured_again(tmp_path, caplog):
    auto(tmp_path, caplog)
    [choice_file] = tmp_path.glob("raw-pixels-*-fp32-auto.json")
    sidecar = choice_file.with_name(choice_file.name + ".json")
    key = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(key | {"cpu_model": "Some Other CPU"}))
    auto(tmp_path, caplog)
    assert "cpu_model: 'Some Other CPU' ->" in caplog.text and "measured now" in caplog.text


def test_choice_key_and_file_change_with_the_model_and_weights(tmp_path):
    _, raw, raw_fingerprint = load_model("raw-pixels")
    _, base, base_fingerprint = load_model("baseline")
    raw_key = choice_key(raw, raw_fingerprint, "fp32")
    assert raw_key != choice_key(base, base_fingerprint, "fp32")
    assert raw_key != choice_key(raw, "0" * 16, "fp32")  # other weights
    assert raw_key != choice_key(raw, raw_fingerprint, "auto")
    assert {"cpu_model", "cpu_flags", "libraries"} <= set(raw_key)
    assert set(raw_key["libraries"]) == {"torch", "onnxruntime", "openvino"}
    paths = {
        choice_path(tmp_path, raw, raw_fingerprint, "fp32"),
        choice_path(tmp_path, base, base_fingerprint, "fp32"),
        choice_path(tmp_path, raw, "0" * 16, "fp32"),
    }
    assert len(paths) == 3


@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16", "auto"])
def test_candidates_are_installed_backends_at_the_asked_precision(precision):
    pairs = candidates(precision)
    assert pairs[0] == REFERENCE
    for backend, pair_precision in pairs[1:]:
        assert precision in ("auto", pair_precision)
        if backend in ("onnxruntime", "openvino"):
            importlib.import_module(backend)  # listed only when installed
