"""
The node started with backend auto survives candidates that crash while auto measures them.

Issue 17: on an Intel AMX host, measuring every backend in one process segfaulted and took
the node down on most first starts.  Here the crashes are provoked for real in the
candidates' child processes (VPR_ROS_AUTO_FAULT, see vpr_ros.inference.auto_child).
"""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")

from vpr_harness.replay.processes import start_node, stop_process  # noqa: E402
from vpr_ros.inference.auto import candidates  # noqa: E402
from vpr_ros.inference.auto_child import FAULT_ENV  # noqa: E402
from vpr_ros.inference.factory import tensorrt_problem  # noqa: E402

MODEL = "baseline"
STARTED = f"model {MODEL} on torch (fp32)"
# Only bounds a failing test; the test passes on the event (the line in the node's log).
START_DEADLINE_S = 600


@pytest.mark.skipif(tensorrt_problem() is None, reason="TensorRT and a GPU: auto picks tensorrt")
def test_node_starts_on_the_survivor_when_the_other_candidates_crash(tmp_path, monkeypatch):
    # ONNX Runtime dies of SIGSEGV in its first timed run, OpenVINO aborts while building:
    # torch fp32 is left, so the node must start on it.
    monkeypatch.setenv(FAULT_ENV, "onnxruntime:fp32:segv:run,openvino:fp32:abort:build")
    log_path = tmp_path / "node.log"
    cache = tmp_path / "cache"
    node = start_node(
        tmp_path / "no_map_needed",
        MODEL,
        "/test/camera",
        log_path,
        extra=["-p", "backend:=auto", "-p", "precision:=fp32", "-p", f"engine_cache_dir:={cache}"],
    )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while STARTED not in log_path.read_text() and node.poll() is None:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        log = log_path.read_text()
        assert node.poll() is None, f"the node ended (status {node.returncode}):\n{log}"
        assert "onnxruntime fp32 left out: crashed with signal SIGSEGV while timing" in log
        [choice_file] = cache.glob(f"{MODEL}-*-fp32-auto.json")
        choice = json.loads(choice_file.read_text())
        assert (choice["best"]["backend"], choice["best"]["precision"]) == ("torch", "fp32")
        reasons = {(e["backend"], e["precision"]): e["reason"] for e in choice["excluded"]}
        assert reasons[("onnxruntime", "fp32")] == "crashed with signal SIGSEGV while timing"
        if ("openvino", "fp32") in candidates("fp32"):
            assert reasons[("openvino", "fp32")] == "crashed with signal SIGABRT while building"
    finally:
        assert stop_process(node) == 0, log_path.read_text()
