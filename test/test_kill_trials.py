"""
kill -9 during `vpr-ros build-map`, aimed at every phase.

(Issue 9, defect 3 and the fault campaign.) After each kill the map still loads (the previous
one or the new one); after the next build no temporary directory or lock file is left beside
it. The bench runs the 50-trial version.
"""

import pytest

from vpr_harness.replay.map_write_faults import KILL_PHASES, run_kill_trials


@pytest.mark.slow
def test_killed_builds_lose_no_map_and_the_next_build_leaves_no_debris(tmp_path):
    result = run_kill_trials(len(KILL_PHASES), tmp_path, images=600)
    assert result["maps_lost"] == 0, result["failures"]
    assert result["debris_mb"] == 0.0
    assert sum(result["phases"].values()) == len(KILL_PHASES)
    # the kills reached both the extraction and the write phases (each aimed by what the build had
    # done, and read while it was stopped)
    assert "extracting" in result["phases"] and set(result["phases"]) - {"extracting"}, result[
        "phases"
    ]
