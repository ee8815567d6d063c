"""The node's one-frame mailbox (pure Python: runs without rclpy)."""

from vpr_ros.ros.latest_slot import LatestSlot


def test_latest_slot_keeps_only_the_newest_and_counts_the_rest():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(0) == 4 and slot.dropped == 4
    assert slot.take(0.01) is None
    slot.close()
    assert slot.take(None) is None  # closed: no waiting forever
