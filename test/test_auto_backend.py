"""
``auto`` measures the CPU backends once per model, weights, CPU and library versions.

The measurement runs on raw-pixels (tiny, so the test is fast); the choice is read back
from the cache directory by later calls and is redone when its key no longer matches.
Candidates that crash or hang are provoked for real in their child processes through
VPR_ROS_AUTO_FAULT (vpr_ros.inference.auto_child).
"""

from __future__ import annotations

import importlib
import json
import logging

import numpy as np
import pytest

from vpr_ros.errors import BackendUnavailableError, ConfigError
from vpr_ros.inference.auto import (
    MIN_COSINE,
    REFERENCE,
    Recipe,
    Timeouts,
    candidates,
    choice_key,
    choice_path,
    choose,
)
from vpr_ros.inference.auto_child import FAULT_ENV
from vpr_ros.inference.factory import build_extractor, create_extractor, tensorrt_problem
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


def test_a_crashing_winner_is_left_out_remembered_and_the_next_best_starts(
    tmp_path, caplog, monkeypatch
):
    healthy = auto(tmp_path / "healthy", caplog)
    winner = (healthy.backend, healthy.precision)
    # The winner's child now dies of SIGSEGV in its first timed run, as on the AMX host.
    monkeypatch.setenv(FAULT_ENV, f"{healthy.backend}:{healthy.precision}:segv:run")
    extractor = auto(tmp_path / "faulty", caplog)
    assert "measured now" in caplog.text
    assert f"auto: {winner[0]} {winner[1]} left out: crashed with signal SIGSEGV" in caplog.text
    [choice_file] = (tmp_path / "faulty").glob("raw-pixels-*-fp32-auto.json")
    choice = json.loads(choice_file.read_text())
    measured = {(r["backend"], r["precision"]): r["ms"] for r in choice["measured"]}
    chosen = (extractor.backend, extractor.precision)
    assert winner not in measured and chosen != winner
    assert chosen == min(measured, key=measured.get), "not the fastest of the survivors"
    reasons = {(e["backend"], e["precision"]): e["reason"] for e in choice["excluded"]}
    assert reasons[winner] == "crashed with signal SIGSEGV while timing"
    images = [np.full((48, 64, 3), v, np.uint8) for v in (30, 120, 220)]
    reference = create_extractor("raw-pixels", backend="torch").extract(images)
    assert (reference * extractor.extract(images)).sum(1).min() >= MIN_COSINE

    # A later start reads the choice, exclusion included, instead of crashing a child again.
    again = auto(tmp_path / "faulty", caplog)
    assert "measured earlier" in caplog.text and "measured now" not in caplog.text
    assert f"{winner[0]} {winner[1]} (crashed with signal SIGSEGV while timing)" in caplog.text
    assert (again.backend, again.precision) == chosen


def test_crashes_while_building_and_hangs_are_reported_when_no_candidate_survives(
    tmp_path, caplog, monkeypatch
):
    monkeypatch.setenv(
        FAULT_ENV, "torch:fp32:abort:build,onnxruntime:fp32:hang:run,openvino:fp32:segv:build"
    )
    net, spec, fingerprint = load_model("raw-pixels")

    def build(backend, precision):
        return build_extractor(backend, precision, net, spec, fingerprint, tmp_path)

    # Every candidate fails, so the short run timeout can only catch the hanging one.
    timeouts = Timeouts(build_s=600, run_s=2)
    with pytest.raises(BackendUnavailableError) as refused:
        recipe = Recipe("raw-pixels", None, str(tmp_path))
        choose(spec, fingerprint, "fp32", tmp_path, build, recipe, timeouts=timeouts)
    message = str(refused.value)
    assert "torch fp32: crashed with signal SIGABRT while building" in message
    assert "onnxruntime fp32: hung: no answer within 2 s while timing; killed" in message
    if ("openvino", "fp32") in candidates("fp32"):
        assert "openvino fp32: crashed with signal SIGSEGV while building" in message
    assert "backend torch precision fp32" in message
    assert not list(tmp_path.glob("*-auto.json")), "a failed measurement must not be cached"


def test_a_malformed_fault_entry_is_refused_with_its_format(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "onnxruntime:fp32:explode")
    with pytest.raises(ConfigError, match="BACKEND:PRECISION:FAULT:STAGE"):
        auto(tmp_path, caplog)
