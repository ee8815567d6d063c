"""
`make demo` (vpr_harness.demo.run) end to end on the synthetic route, at the size it runs.

Node, player and collector in their own processes. The query drive leaves the map for a stretch
and is carried once to another part of the route: the demo's goals are checked on its report.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    r = subprocess.run(
        [sys.executable, "-m", "vpr_harness.demo.run", "--frames", "400", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if r.returncode != 0 or "=== vpr_ros demo ===" not in r.stdout:
        # a failure, not an assertion: the goals' expected failures must not hide a broken demo
        pytest.fail(r.stdout[-3000:] + r.stderr[-3000:])
    return out, json.loads((out / "report.json").read_text())


def test_demo_runs_end_to_end_and_reports(demo):
    out, report = demo
    for run in (report, report["plain"]):  # the node's defaults, and each frame on its own
        # every frame answered or counted as dropped (latest frame wins on a busy host)
        assert run["frames_sent"] >= 300
        assert run["frames_matched"] + run["frames_dropped_by_node"] == run["frames_sent"]
        assert run["frames_bad"] == 0 and run["node_exit_code"] == 0
        assert run["latency_end_to_end_ms"]["p50"] > 0
        # the off-map stretch and the jump are in the drive, and scored
        assert run["on_map"]["frames"] > 200 and run["off_map_frames"] >= 40
        assert len(run["jump_frames"]) == 1 and len(run["frames_to_recover"]) == 1
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


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="not met yet by the pipeline: measured on 8 Dec 2026, on-map Recall@1 0.819 and pose"
    " priors on 40.0 % of the on-map frames (all right)",
)
def test_on_the_map_recall_and_pose_priors_meet_the_goals(demo):
    on_map = demo[1]["on_map"]
    assert on_map["recall_at_1"] >= 0.99, on_map
    assert on_map["pose_prior_fraction"] >= 0.75, on_map
    assert on_map["pose_prior_precision"] == 1.0, on_map


def test_no_pose_prior_off_the_map(demo):
    report = demo[1]
    assert report["off_map_prior_rate"] <= 0.01, report


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="not met yet by the pipeline: measured on 8 Dec 2026, the first right pose prior came"
    " 15 frames after the jump (none wrong before it)",
)
def test_first_right_pose_prior_within_10_frames_after_the_jump(demo):
    report = demo[1]
    recover = report["frames_to_recover"][0]
    assert recover is not None and recover <= 10, report
