"""
`make demo` (vpr_harness.demo.run) end to end on a short synthetic route.

Node, player and collector in their own processes.
"""

import json
import subprocess
import sys


def test_demo_runs_end_to_end_and_reports(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "vpr_harness.demo.run", "--frames", "80", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "=== vpr_ros demo ===" in r.stdout
    report = json.loads((out / "report.json").read_text())
    for run in (report, report["plain"]):  # the node's defaults, and each frame on its own
        assert run["frames_sent"] >= 60 and run["frames_matched"] == run["frames_sent"]
        assert run["frames_bad"] == 0 and run["node_exit_code"] == 0
        assert run["latency_end_to_end_ms"]["p50"] > 0
    assert report["ground_truth"] == "within 10 m"
    # the default model must clearly beat the naive yardstick on the same queries
    offline = report["offline_recall"]
    assert offline["baseline"]["R@1"] > offline["raw-pixels"]["R@1"] + 0.15
    # over DDS as offline: the same pipeline, frame by frame
    assert abs(report["plain"]["recall_at_1"] - offline["baseline"]["R@1"]) < 0.05
    assert abs(report["recall_at_1"] - offline["baseline + hmm"]["R@1"]) < 0.05
    assert report["pose_priors"] > 0 and 0.0 <= report["pose_prior_precision"] <= 1.0
    assert report["pose_prior_fraction"] == report["pose_priors"] / report["frames_sent"]
    assert (out / "trajectory.png").stat().st_size > 20_000
    assert (
        len((out / "best" / "matches.jsonl").read_text().splitlines()) == report["frames_matched"]
    )
