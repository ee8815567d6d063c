"""
~/reload_map on damaged maps: refused by name, the loaded map keeps serving.

A real node in its own process, a Trigger client here.

Every damage class the issue found killed the node or installed a broken map; now each reload is
refused with a message and the old map keeps serving matches. A node started on a damaged map
stays up, says why, and takes the map once it is repaired.
"""

import shutil
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")

from std_srvs.srv import Trigger  # noqa: E402

from vpr_harness.replay.collector import OutputCollector  # noqa: E402
from vpr_harness.replay.fuzz_maps import (  # noqa: E402
    MODEL, RELOAD_DAMAGES, build_base_maps, catalogue, node_reload_sample, pick,
)
from vpr_harness.replay.processes import start_node, stop_process  # noqa: E402

VERIFIED = RELOAD_DAMAGES  # damage classes a reload once failed on
UNVERIFIED = [
    "truncate index.faiss to 1 ",
    "truncate descriptors.npy to 1 ",
    "index.faiss from another map",
    "delete places.csv",
    "truncate places.csv to 1 ",
]


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    base, other, _ = build_base_maps(root)
    return base["flat"], catalogue(base["flat"], other)


@pytest.mark.slow
@pytest.mark.parametrize("verify", [True, False], ids=["verify_map", "verify_map_false"])
def test_each_damaged_reload_is_refused_and_the_old_map_keeps_serving(tmp_path, maps, verify):
    base, candidates = maps
    picks = pick(candidates, VERIFIED if verify else UNVERIFIED)
    result = node_reload_sample(
        base, picks, tmp_path, node_args=[] if verify else ["-p", "verify_map:=false"]
    )
    assert result["reloads"] == len(picks)
    assert result["refused"] == len(picks), result["failures"]
    assert result["old_map_served"] == len(picks), result["failures"]
    assert result["node_alive"] == 1


@pytest.mark.slow
def test_node_started_on_a_damaged_map_stays_up_and_takes_the_repaired_map(tmp_path, maps):
    base, candidates = maps
    live = tmp_path / "map"
    collector = OutputCollector()
    for damage in pick(
        candidates,
        [
            "drop model (checksum recomputed)",
            "manifest replaced by []",
            "truncate index.faiss to 1 ",
        ],
    ):
        shutil.rmtree(live, ignore_errors=True)
        shutil.copytree(base, live)
        damage.apply(live)
        log = tmp_path / "node.log"
        node = start_node(live, MODEL, "/fuzz/camera", log)
        try:
            client = collector.node.create_client(Trigger, "/vpr_localizer/reload_map")
            assert client.wait_for_service(timeout_sec=120), log.read_text()
            time.sleep(0.5)
            assert node.poll() is None and "map not loaded" in log.read_text(), (
                damage.name,
                log.read_text(),
            )
            shutil.rmtree(live)
            shutil.copytree(base, live)
            result = client.call(Trigger.Request(), timeout_sec=30)
            assert result.success, (damage.name, result.message)
            collector.node.destroy_client(client)
        finally:
            assert stop_process(node) == 0, log.read_text()
    collector.close()
