"""Poses: NavSatFix -> UTM, pose messages, interpolation, heading from motion, keyframes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rosbags.typesys import Stores, get_typestore
from keyframes import quaternion_to_yaw, select_keyframes
from sensor_msgs.msg import NavSatFix, NavSatStatus

from vpr_ros.maps.poses import (
    KeyframeSelector,
    PoseTrack,
    PoseTrackBuilder,
    UtmProjector,
    fix_problem,
    header_stamp_ns,
    pose_from_msg,
    slerp,
    yaw_to_quaternion,
)

S = 1_000_000_000


def _fix(
    lat: float, lon: float, alt: float = 10.0, status: int = NavSatStatus.STATUS_FIX
) -> NavSatFix:
    return NavSatFix(latitude=lat, longitude=lon, altitude=alt, status=NavSatStatus(status=status))


def test_known_latlon_to_utm_pair() -> None:
    # The utm package's documented example, and the zone 31 central meridian on the equator.
    projector = UtmProjector()
    easting, northing = projector.project(51.2, 7.5)
    assert (easting, northing) == pytest.approx((395201.310, 5673135.241), abs=1e-3)
    assert str(projector.zone) == "32U"
    assert UtmProjector().project(0.0, 3.0) == pytest.approx((500000.0, 0.0), abs=1e-6)


def test_route_across_a_zone_border_stays_in_the_first_zone() -> None:
    # 6 deg E is the border between zones 31 and 32; 0.2 deg of longitude at the equator is 22.264
    # km.
    projector = UtmProjector()
    e0, n0 = projector.project(0.0, 5.9)
    e1, n1 = projector.project(0.0, 6.1)
    assert str(projector.zone) == "31N"
    assert math.hypot(e1 - e0, n1 - n0) == pytest.approx(22263.9, rel=2e-3)
    assert e1 > e0  # no 600 km jump back to the next zone's false easting


def test_invalid_fixes_are_skipped() -> None:
    assert fix_problem(_fix(37.7, -122.5)) is None
    assert fix_problem(_fix(37.7, -122.5, status=NavSatStatus.STATUS_NO_FIX)) is not None
    assert fix_problem(_fix(float("nan"), -122.5)) is not None
    builder = PoseTrackBuilder()
    assert builder.add(0, _fix(37.7, -122.5))
    assert not builder.add(S, _fix(37.7, -122.5, status=-1))
    assert not builder.add(2 * S, _fix(float("nan"), float("nan")))
    assert (
        builder.skipped == {"no fix (status -1)": 1, "NaN or infinite coordinates": 1}
        and len(builder.build()) == 1
    )


@pytest.mark.parametrize(
    ("lat", "lon", "status", "reason"),
    [
        # utm raised OutOfRangeError and stopped build-map
        (95.0, 10.0, 0, "latitude/longitude out of range"),
        (48.0, 181.0, 0, "latitude/longitude out of range"),
        (85.0, 10.0, 0, "outside UTM (latitude beyond 84 N / 80 S)"),
        (-80.5, 10.0, 0, "outside UTM (latitude beyond 84 N / 80 S)"),
        (0.0, 0.0, 0, "(0, 0) placeholder"),
        (float("inf"), 1.0, 0, "NaN or infinite coordinates"),
        (48.0, 11.0, -1, "no fix (status -1)"),
        (48.0, 11.0, -2, "no fix (status -1)"),
    ],
)
def test_impossible_fixes_are_refused_with_their_reason(lat, lon, status, reason) -> None:
    assert fix_problem(_fix(lat, lon, status=status)) == reason
    builder = PoseTrackBuilder()
    assert builder.add(S, _fix(48.0, 11.0))
    assert not builder.add(2 * S, _fix(lat, lon, status=status))  # no exception, counted instead
    assert builder.skipped == {reason: 1} and len(builder.build()) == 1


def test_valid_edge_fixes_are_kept() -> None:
    for lat, lon in ((84.0, 10.0), (-80.0, -179.9), (0.0, 0.0001), (1e-9, 0.0)):
        assert fix_problem(_fix(lat, lon)) is None, (lat, lon)


def test_duplicate_stamps_are_counted_and_a_clock_jump_falls_back_to_the_recording_time() -> None:
    builder = PoseTrackBuilder()
    for stamp in (0, S, S, 2 * S):
        builder.add(stamp, _fix(48.0, 11.0 + stamp / S * 1e-4))
    assert len(builder.build()) == 3 and builder.skipped == {"duplicate stamp": 1}
    fix = _fix(48.0, 11.0)
    fix.header.stamp.sec = 100
    assert header_stamp_ns(fix, 100 * S + 20_000_000, max_skew_s=5.0) == 100 * S
    assert header_stamp_ns(fix, 200 * S, max_skew_s=5.0) == 200 * S
    assert header_stamp_ns(fix, 200 * S) == 100 * S


def test_zero_quaternion_keeps_the_position_without_orientation() -> None:
    stamped = PoseStamped()
    stamped.pose.position.x = 4.0
    stamped.pose.orientation.w = 0.0
    builder = PoseTrackBuilder()
    assert builder.add(S, stamped) and builder.add(2 * S, stamped)
    track = builder.build()
    assert track.positions[0, 0] == 4.0 and np.isnan(track.orientations).all()


def test_pose_messages_of_every_type() -> None:
    odom = Odometry()
    odom.pose.pose.position.x, odom.pose.pose.position.y, odom.pose.pose.position.z = 1.0, 2.0, 3.0
    odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = math.sin(0.25), math.cos(0.25)
    stamped = PoseStamped()
    stamped.pose.position.x = 4.0
    with_cov = PoseWithCovarianceStamped()
    with_cov.pose.pose.position.y = 5.0
    position, orientation = pose_from_msg(odom)
    assert position.tolist() == [1.0, 2.0, 3.0]
    assert quaternion_to_yaw(orientation) == pytest.approx(0.5)
    assert pose_from_msg(stamped)[0].tolist() == [4.0, 0.0, 0.0]
    assert pose_from_msg(stamped)[1].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert pose_from_msg(with_cov)[0].tolist() == [0.0, 5.0, 0.0]


def test_rosbags_messages_read_the_same_way() -> None:
    types = get_typestore(Stores.ROS2_KILTED).types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=3, nanosec=7), frame_id="gps"
    )
    fix = types["sensor_msgs/msg/NavSatFix"](
        header=header,
        status=types["sensor_msgs/msg/NavSatStatus"](status=0, service=1),
        latitude=51.2,
        longitude=7.5,
        altitude=1.0,
        position_covariance=np.zeros(9),
        position_covariance_type=0,
    )
    assert header_stamp_ns(fix, fallback_ns=99) == 3 * S + 7
    builder = PoseTrackBuilder()
    assert builder.add(header_stamp_ns(fix, 0), fix)
    track = builder.build()
    assert track.utm_zone == "32U"
    assert track.positions[0] == pytest.approx([395201.310, 5673135.241, 1.0], abs=1e-3)
    header.stamp.sec = 0
    header.stamp.nanosec = 0
    assert header_stamp_ns(fix, fallback_ns=99) == 99


def test_slerp_halfway_between_two_yaws() -> None:
    q = slerp(
        yaw_to_quaternion(np.array([0.0])),
        yaw_to_quaternion(np.array([math.pi / 2])),
        np.array([0.5]),
    )
    assert q[0] == pytest.approx([0.0, 0.0, math.sin(math.pi / 8), math.cos(math.pi / 8)])
    # 170 deg -> -170 deg goes the short way, through 180 deg, not through 0.
    q = slerp(
        yaw_to_quaternion(np.radians([170.0])),
        yaw_to_quaternion(np.radians([-170.0])),
        np.array([0.5]),
    )
    assert abs(math.degrees(quaternion_to_yaw(q[0]))) == pytest.approx(180.0)


def _l_track() -> PoseTrack:
    positions = np.array([[0.0, 0, 0], [10, 0, 0], [10, 10, 0]])
    return PoseTrack(
        np.array([0, S, 2 * S]),
        positions,
        yaw_to_quaternion(np.array([0.0, math.pi / 2, math.pi / 2])),
    )


def test_interpolation_is_linear_and_slerped_inside_and_refused_beyond_the_gap() -> None:
    samples = _l_track().interpolate(
        [S // 2, 3 * S // 2, -S // 2, -3 * S // 2, 29 * S // 10, 35 * S // 10]
    )
    assert samples.valid.tolist() == [True, True, True, False, True, False]
    assert samples.positions[0] == pytest.approx([5.0, 0, 0])
    assert samples.positions[1] == pytest.approx([10.0, 5, 0])
    assert samples.positions[2] == pytest.approx([0.0, 0, 0])  # held, not extrapolated
    assert samples.positions[4] == pytest.approx([10.0, 10, 0])
    assert np.isnan(samples.positions[3]).all() and np.isnan(samples.orientations[5]).all()
    assert quaternion_to_yaw(samples.orientations[0]) == pytest.approx(math.pi / 4)


def test_interpolation_refuses_inside_a_long_dropout() -> None:
    track = PoseTrack(np.array([0, 10 * S]), np.array([[0.0, 0, 0], [100, 0, 0]]))
    samples = track.interpolate([S // 2, 5 * S, 19 * S // 2], max_gap_s=1.0)
    assert samples.valid.tolist() == [True, False, True]
    assert samples.positions[2] == pytest.approx([95.0, 0, 0])
    assert samples.orientations is None


def test_heading_from_gps_motion() -> None:
    # East 5 samples 1 m apart, then north: yaw 0 then pi/2 (ENU).
    east = [[x, 0.0, 0.0] for x in range(5)]
    north = [[4.0, y, 0.0] for y in range(1, 6)]
    track = PoseTrack(np.arange(10) * S, np.array(east + north)).with_heading_from_motion(
        min_motion_m=1.0
    )
    yaw = quaternion_to_yaw(track.orientations)
    assert yaw[:4] == pytest.approx([0.0] * 4)
    assert yaw[4:] == pytest.approx([math.pi / 2] * 6)  # the tail keeps the last heading
    still = PoseTrack(np.arange(3) * S, np.zeros((3, 3))).with_heading_from_motion()
    assert still.orientations is None


def test_builder_sorts_dedups_and_gives_gps_a_heading() -> None:
    builder = PoseTrackBuilder()
    # Fixes due north 0.0001 deg (~11 m) apart, added out of order, one duplicate stamp.
    for stamp, lat in [(2 * S, 0.0002), (0, 0.0), (S, 0.0001), (S, 0.0005)]:
        builder.add(stamp, _fix(lat, 3.0))
    track = builder.build()
    assert track.stamps_ns.tolist() == [0, S, 2 * S]
    assert track.latlons[:, 0] == pytest.approx([0.0, 0.0001, 0.0002])
    # 110574 m/deg * 0.9996 scale
    assert np.diff(track.positions[:, 1]) == pytest.approx([11.053, 11.053], abs=0.002)
    assert quaternion_to_yaw(track.orientations) == pytest.approx([math.pi / 2] * 3, abs=1e-6)


def test_keyframes_by_distance() -> None:
    # altitude noise ignored
    positions = np.array([[0.4 * i, 0.0, 50.0 * (i % 2)] for i in range(10)])
    assert select_keyframes(positions, min_distance_m=1.0) == [0, 3, 6, 9]
    assert select_keyframes(positions, min_distance_m=0.0) == list(range(10))


def test_keyframes_every_n_without_poses_and_mixed() -> None:
    assert select_keyframes([None] * 7, every_n=3) == [0, 3, 6]
    mixed = [
        np.array([0.0, 0, 0]),
        None,
        None,
        np.array([0.5, 0, 0]),
        np.array([2.0, 0, 0]),
        None,
        np.array([np.nan] * 3),
    ]
    assert select_keyframes(mixed, min_distance_m=1.0, every_n=2) == [0, 1, 4, 5]
    with pytest.raises(ValueError):
        KeyframeSelector(every_n=0)
