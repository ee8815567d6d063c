"""
Image fuzzing of the conversion layer: every mutated message decoded or refused by name.

Generated Image/CompressedImage messages through the conversion layer give a decoded image or
an ImageDecodeError with a reason, never anything else. CI-sized here;
bench/bench_reliability.py runs 10,000 and more.
"""

from __future__ import annotations

import pytest

from vpr_ros.imaging import SUPPORTED_ENCODINGS
from vpr_harness.replay.fuzz_images import COMPRESSED_DAMAGES, RAW_DAMAGES, run_image_campaign

N = 2500


def test_generated_messages_never_crash_the_decoder() -> None:
    result = run_image_campaign(N, seed=1)
    assert result["crashes"] == 0, result["crash_examples"]
    assert result["inputs"] == N == result["decoded"] + result["refused"]
    # The campaign reached every encoding, both compressed formats and every kind of damage.
    labels = result["labels"]
    assert {label.split("/")[1] for label in labels if label.startswith("raw/")} == set(
        SUPPORTED_ENCODINGS
    )
    assert {label.split("/")[1] for label in labels if label.startswith("compressed/")} == {
        "jpeg",
        "png",
    }
    assert {label.split("/")[2] for label in labels} == set(RAW_DAMAGES) | set(COMPRESSED_DAMAGES)
    # Refusals carry reasons that name the problem; valid messages decoded (checked per message
    # above).
    assert result["refused"] > N / 4 and result["decoded"] > N / 4
    for reason in (
        "too many pixels",
        "truncated JPEG",
        "data size differs from step*height",
        "unsupported encoding",
    ):
        assert result["reasons"][reason] > 0, reason


def test_the_campaign_is_deterministic_in_its_seed() -> None:
    a, b = run_image_campaign(200, seed=7), run_image_campaign(200, seed=7)
    assert a["labels"] == b["labels"] and a["reasons"] == b["reasons"]


# --- the same messages through a live node in its own process ------------------------------------

@pytest.mark.slow
def test_live_node_survives_bad_messages_and_keeps_matching(tmp_path) -> None:
    pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")
    from vpr_harness.replay.fuzz_images import run_live_campaign

    results = run_live_campaign(tmp_path, per_transport=300)
    assert sum(r["sent_bad"] for r in results.values()) >= 500
    for transport, r in results.items():
        assert r["node_alive"] and r["failed"] == 0, (transport, r)
        # Reliable QoS and a pause per frame: the node sees (nearly) every message and accounts for
        # each one.
        sent = r["sent_bad"] + r["good_sent"]
        assert 0.95 * sent <= r["received"] <= sent, (transport, r)
        assert r["received"] == r["processed"] + r["dropped"] + r["bad"], (transport, r)
        # Every message the decoder refuses offline is counted bad (or was replaced before its
        # turn).
        assert r["expected_refused"] > 200, (transport, r)
        assert r["bad"] + r["dropped"] >= r["expected_refused"] - (sent - r["received"]), (
            transport,
            r,
        )
        # The good frames among them still reach their own place.
        assert r["good_sent"] == 6 and r["good_matched"] == r["good_sent"], (transport, r)
        # Bad frames are logged throttled (log_throttle_s 1.0) with their reason; no decoder lines.
        assert 0 < r["bad_frame_warnings"] <= r["seconds"] + 2 and r["decoder_lines"] == 0, (
            transport,
            r,
        )
