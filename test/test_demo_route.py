"""
The synthetic demo.

Deterministic rendering, real rosbag2 output, and an honest appearance change.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import utm
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from vpr_harness.demo.route import (
    CAMERA_TOPIC,
    COMPRESSED_CAMERA_TOPIC,
    GPS_TOPIC,
    ODOM_TOPIC,
    ORIGIN_LATLON,
    demo_traversals,
    ground_truth,
    write_traversal_bag,
)
from vpr_harness.demo.world import StreetWorld
from vpr_ros.evaluation.recall import recall_at_n

FRAMES = 30  # 3 s of driving: enough to check counts and stamps, quick to render


@pytest.fixture(scope="module")
def world() -> StreetWorld:
    return StreetWorld(seed=0)


@pytest.fixture(scope="module")
def traversals():
    return demo_traversals(FRAMES)


def _read(path):
    """{topic: [(bag timestamp, message type, decoded message)]} of a bag."""
    out = {}
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append(
                (stamp, conn.msgtype, reader.deserialize(raw, conn.msgtype))
            )
    return out


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_render_is_deterministic_and_seeded(world, traversals):
    pose = traversals[0].camera_poses()[5]
    image = world.render(pose, traversals[0].appearance)
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(
        image, StreetWorld(seed=0).render(pose, traversals[0].appearance)
    )
    other_city = StreetWorld(seed=1).render(pose, traversals[0].appearance)
    assert np.abs(other_city.astype(int) - image).mean() > 10
    # The image has structure (facades, sky, road), not a flat fill.
    assert image.std() > 30 and len(np.unique(image.reshape(-1, 3), axis=0)) > 1000
    # Shading at full resolution instead of half changes edges, not the scene.
    full_resolution = StreetWorld(seed=0, render_scale=1.0).render(pose, traversals[0].appearance)
    assert full_resolution.shape == image.shape
    assert np.abs(full_resolution.astype(int) - image).mean() < 8


def test_traversals_are_deterministic(traversals):
    again = demo_traversals(FRAMES)
    np.testing.assert_array_equal(again[1].frame_positions(), traversals[1].frame_positions())
    assert again[1].camera_poses() == traversals[1].camera_poses()


@pytest.mark.parametrize("storage,compressed", [("sqlite3", False), ("mcap", True)])
def test_bag_has_topics_counts_types_and_stamps(tmp_path, world, traversals, storage, compressed):
    reference = traversals[0]
    path = write_traversal_bag(
        tmp_path / "map", reference, world, storage, compressed, progress=False
    )
    topics = _read(path)
    camera_topic = COMPRESSED_CAMERA_TOPIC if compressed else CAMERA_TOPIC
    assert set(topics) == {camera_topic, GPS_TOPIC, ODOM_TOPIC}
    camera, gps, odom = topics[camera_topic], topics[GPS_TOPIC], topics[ODOM_TOPIC]
    assert (len(camera), len(gps), len(odom)) == (FRAMES, FRAMES // 2, FRAMES)
    assert {m[1] for m in camera} == {
        "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    }
    assert {m[1] for m in gps} == {"sensor_msgs/msg/NavSatFix"}
    assert {m[1] for m in odom} == {"nav_msgs/msg/Odometry"}

    stamps = np.array([_stamp_ns(m[2]) for m in camera])
    np.testing.assert_array_equal(stamps, reference.frame_stamps_ns())
    np.testing.assert_array_equal(stamps, [m[0] for m in camera])  # bag time = header stamp
    assert np.all(np.diff(stamps) == 100_000_000)
    gps_stamps = np.array([_stamp_ns(m[2]) for m in gps])
    assert np.all(np.diff(gps_stamps) == 200_000_000)
    assert not set(gps_stamps) & set(
        stamps
    ), "GPS must not share camera stamps, so poses need interpolating"
    assert {m[2].header.frame_id for m in camera} == {"camera"}

    first = camera[0][2]
    expected = world.render(reference.camera_poses()[0], reference.appearance)
    if compressed:
        assert first.format.endswith("jpeg compressed bgr8")
        decoded = cv2.cvtColor(cv2.imdecode(first.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.abs(decoded.astype(int) - expected).mean() < 4
    else:
        assert (first.encoding, first.height, first.width, first.step) == (
            "rgb8",
            480,
            640,
            640 * 3,
        )
        np.testing.assert_array_equal(first.data.reshape(480, 640, 3), expected)


def test_gps_decodes_back_to_the_true_utm_position(tmp_path, world, traversals):
    query = dataclasses.replace(traversals[1], frames=10)
    gps = _read(write_traversal_bag(tmp_path / "q", query, world, progress=False))[GPS_TOPIC]
    east0, north0, zone, letter = utm.from_latlon(*ORIGIN_LATLON)
    t = np.array([(_stamp_ns(m[2]) - query.epoch_ns) / 1e9 for m in gps])
    truth, _ = query.drive.poses(t)
    for (_, _, fix), (x, y) in zip(gps, truth):
        east, north, fix_zone, fix_letter = utm.from_latlon(fix.latitude, fix.longitude)
        assert (fix_zone, fix_letter) == (zone, letter)
        assert abs(east - east0 - x) < 0.1 and abs(north - north0 - y) < 0.1
        assert fix.status.status == 0 and fix.header.frame_id == "gps"


def test_query_revisits_the_map_places_from_another_viewpoint():
    reference, query = demo_traversals(400)
    route_length = reference.drive.route.length_m
    assert 500 < route_length < 1500
    spacing = np.linalg.norm(np.diff(reference.frame_positions(), axis=0), axis=1)
    assert 1.0 < spacing.mean() < 2.0
    # Every query frame has map frames nearby, but the two drives never coincide.
    distance = np.linalg.norm(
        query.frame_positions()[:, None] - reference.frame_positions()[None], axis=2
    )
    nearest = distance.min(1)
    assert nearest.max() < 3.0 and np.median(nearest) > 0.4
    assert all(len(g) > 0 for g in ground_truth(query, reference, 10.0))
    assert query.frames < reference.frames  # it drives faster
    # The query looks a few degrees off the map's heading at the same place.
    map_yaw = np.array([p.yaw for p in reference.camera_poses()])[distance.argmin(1)]
    query_yaw = np.array([p.yaw for p in query.camera_poses()])
    yaw_offset = np.degrees(np.abs(np.angle(np.exp(1j * (query_yaw - map_yaw)))))
    assert 2.0 < np.percentile(yaw_offset, 90) < 8.0


def test_excursions_leave_the_map_for_a_stretch_and_jump_once():
    reference, query = demo_traversals(400, excursions=True)
    usual = demo_traversals(400)[1]
    map_xy, query_xy = reference.frame_positions(), query.frame_positions()
    nearest = np.linalg.norm(query_xy[:, None] - map_xy[None], axis=2).min(1)
    # One stretch farther than three match radii from every map frame, inside the drive.
    off = np.flatnonzero(nearest > 30.0)
    assert len(off) >= 0.1 * query.frames and np.all(np.diff(off) == 1)
    assert 0 < off[0] and off[-1] < query.frames - 1
    # One jump: consecutive frames from places far apart; elsewhere a drive's steps.
    steps = np.linalg.norm(np.diff(query_xy, axis=0), axis=1)
    jump = query.jump_frame()
    assert (np.flatnonzero(steps > 30.0) + 1).tolist() == [jump]
    assert np.delete(steps, jump - 1).max() < 3.0
    # It lands on the map after the off-map stretch, with frames left to recover in.
    assert off[-1] < jump and nearest[jump] < 3.0 and query.frames - jump > 30
    # The wheels do not see it: odometry stays continuous.
    assert np.diff(query.drive.driven(query.frame_times_s)).max() < 3.0
    # Otherwise the usual query drive: frames, light and season.
    assert query.frames == usual.frames and query.appearance == usual.appearance
    assert usual.jump_frame() is None


def _raw_pixels(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()


def _patch_normalised(image: np.ndarray, patch: int = 8) -> np.ndarray:
    """SeqSLAM-style: 64x32 grayscale, each 8x8 patch normalised to zero mean and unit variance."""
    gray = cv2.resize(
        cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (64, 32), interpolation=cv2.INTER_AREA
    )
    patches = (
        gray.astype(np.float32).reshape(32 // patch, patch, 64 // patch, patch).swapaxes(1, 2)
    )
    patches = patches.reshape(-1, patch * patch)
    return (
        (patches - patches.mean(1, keepdims=True)) / (patches.std(1, keepdims=True) + 1e-3)
    ).ravel()


def _recall_at_1(query: np.ndarray, reference: np.ndarray, positives) -> float:
    # Nearest by L2 on the raw (unnormalised) vectors, as SeqSLAM compares them.
    distance = (query**2).sum(1)[:, None] - 2 * query @ reference.T + (reference**2).sum(1)[None]
    return recall_at_n(distance.argmin(1)[:, None], positives, ns=(1,))[1]


def test_appearance_change_defeats_raw_pixels_but_not_patch_normalisation(world):
    # A coarser run than the demo (200 map frames, every 2nd query frame) keeps this test quick.
    reference, query = demo_traversals(200)
    query_every = 2
    ref_images = [world.render(p, reference.appearance) for p in reference.camera_poses()]
    query_poses = query.camera_poses()[::query_every]
    query_images = [world.render(p, query.appearance) for p in query_poses]
    same_light_images = [world.render(p, reference.appearance) for p in query_poses]
    positives = ground_truth(query, reference, 10.0)[::query_every]

    recall = {}
    for name, describe in (("raw", _raw_pixels), ("patch", _patch_normalised)):
        ref_desc = np.stack([describe(i) for i in ref_images])
        recall[name] = _recall_at_1(
            np.stack([describe(i) for i in query_images]), ref_desc, positives
        )
        same_light = np.stack([describe(i) for i in same_light_images])
        recall[name + "_same_light"] = _recall_at_1(same_light, ref_desc, positives)
    # Places stay recognisable: under the map's light the viewpoint change alone is easy...
    assert recall["raw_same_light"] > 0.5 and recall["patch_same_light"] > 0.5, recall
    # ...but the query's light, weather and season break raw pixels, not a normalised descriptor.
    assert recall["raw"] < 0.2, recall
    assert recall["patch"] > recall["raw"] + 0.15, recall
