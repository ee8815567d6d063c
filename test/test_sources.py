"""Frame sources: real rosbag2 bags written with rosbags (sqlite3 and mcap), and image folders."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED, needs_shared
from keyframes import quaternion_to_yaw, select_keyframes
import utm
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vpr_ros.errors import BagError, VprError
from vpr_ros.imaging import rgb_to_compressed, rgb_to_image_fields
from vpr_ros.maps.sources import BagSource, FolderSource, parse_vpr_filename

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
S = 1_000_000_000
CAMERA_HZ = 10
CAMERA_S = 3.0
ORIGIN_E, ORIGIN_N, ZONE = 500_000.0, 1_000.0, (31, "N")
SHARED_SUMMER = SHARED / "data" / "nordland_trimmed" / "summer"


def _header(stamp_ns: int, frame_id: str):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // S, nanosec=stamp_ns % S),
        frame_id=frame_id,
    )


def _camera_stamps() -> list[int]:
    return [int((0.05 + k / CAMERA_HZ) * S) for k in range(int(CAMERA_S * CAMERA_HZ))]


def _colour(k: int) -> np.ndarray:
    """Flat 48x64 image whose red channel encodes the frame number (survives JPEG)."""
    rgb = np.empty((48, 64, 3), np.uint8)
    rgb[:] = (8 * k, 100, 200)
    return rgb


def _east(t_s: float) -> float:
    return 2.0 * t_s * t_s  # accelerating: interpolation differs from the true curve, as it should


def _write_bag(
    path: Path,
    storage: StoragePlugin,
    image: str = "raw",
    pose: str = "gps",
    corrupt_frame: int | None = None,
    gps_start_s: float = 0.0,
) -> Path:
    """Camera at 10 Hz; GPS at 2 Hz (one NO_FIX), or odometry at 20 Hz turning at 0.5 rad/s."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        if image == "raw":
            image_conn = writer.add_connection(
                "/camera/image_raw", "sensor_msgs/msg/Image", typestore=TS
            )
        else:
            image_conn = writer.add_connection(
                "/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage", typestore=TS
            )
        if pose == "gps":
            pose_conn = writer.add_connection(
                "/gps/fix", "sensor_msgs/msg/NavSatFix", typestore=TS
            )
            for k, t in enumerate(np.arange(gps_start_s, CAMERA_S + 0.01, 0.5)):
                lat, lon = utm.to_latlon(ORIGIN_E + _east(t), ORIGIN_N, *ZONE)
                status = -1 if k == 2 else 0  # a NO_FIX with junk coordinates must be ignored
                fix = T["sensor_msgs/msg/NavSatFix"](
                    header=_header(int(t * S), "gps"),
                    status=T["sensor_msgs/msg/NavSatStatus"](status=status, service=1),
                    latitude=lat + 5 * (status < 0), longitude=lon, altitude=30.0,
                    position_covariance=np.zeros(9), position_covariance_type=0,
                )
                writer.write(pose_conn, int(t * S), TS.serialize_cdr(fix, fix.__msgtype__))
        elif pose == "odom":
            pose_conn = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=TS)
            for t in np.arange(0.0, CAMERA_S + 0.01, 0.05):
                odom = T["nav_msgs/msg/Odometry"](
                    header=_header(int(round(t * S)), "odom"),
                    child_frame_id="base_link",
                    pose=T["geometry_msgs/msg/PoseWithCovariance"](
                        pose=T["geometry_msgs/msg/Pose"](
                            position=T["geometry_msgs/msg/Point"](x=t, y=-t, z=0.0),
                            orientation=T["geometry_msgs/msg/Quaternion"](
                                x=0.0, y=0.0, z=math.sin(t / 4), w=math.cos(t / 4)
                            ),
                        ),
                        covariance=np.zeros(36),
                    ),
                    twist=T["geometry_msgs/msg/TwistWithCovariance"](
                        twist=T["geometry_msgs/msg/Twist"](
                            linear=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                            angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                        ),
                        covariance=np.zeros(36),
                    ),
                )
                writer.write(
                    pose_conn, int(round(t * S)), TS.serialize_cdr(odom, odom.__msgtype__)
                )
        for k, stamp in enumerate(_camera_stamps()):
            if image == "raw":
                msg = T["sensor_msgs/msg/Image"](
                    header=_header(stamp, "camera"), **rgb_to_image_fields(_colour(k), "rgb8")
                )
            else:
                fmt, data = rgb_to_compressed(_colour(k), "jpeg", quality=95)
                data = data[: len(data) // 2] if k == corrupt_frame else data
                msg = T["sensor_msgs/msg/CompressedImage"](
                    header=_header(stamp, "camera"), format=fmt, data=np.frombuffer(data, np.uint8)
                )
            # bag time lags the header stamp, as a real recorder's does
            writer.write(image_conn, stamp + 20_000_000, TS.serialize_cdr(msg, msg.__msgtype__))
    return path


def _expected_east(stamp_ns: int, gps_start_s: float = 0.0) -> float:
    fix_times = [t for k, t in enumerate(np.arange(gps_start_s, CAMERA_S + 0.01, 0.5)) if k != 2]
    return ORIGIN_E + float(np.interp(stamp_ns / S, fix_times, [_east(t) for t in fix_times]))


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
@pytest.mark.parametrize("image", ["raw", "compressed"])
def test_bag_with_gps_interpolates_at_image_stamps(
    tmp_path: Path, storage: StoragePlugin, image: str
) -> None:
    bag = _write_bag(tmp_path / "bag", storage, image)
    topic = "/camera/image_raw" if image == "raw" else "/camera/image_raw/compressed"
    source = BagSource([bag], topic, "/gps/fix")
    frames = list(source)
    assert len(source) == len(frames) == 30
    assert [f.stamp_ns for f in frames] == _camera_stamps()
    for k, frame in enumerate(frames):
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8
        assert abs(int(frame.image[10, 10, 0]) - 8 * k) <= 2  # right image, in order
        assert frame.position[0] == pytest.approx(_expected_east(frame.stamp_ns), abs=0.01)
        assert frame.position[1] == pytest.approx(ORIGIN_N, abs=0.01)
        assert frame.position[2] == pytest.approx(30.0)
        assert frame.utm_zone == "31N"
        assert frame.latlon == pytest.approx(utm.to_latlon(*frame.position[:2], *ZONE), abs=1e-6)
        # heading east, from motion
        assert quaternion_to_yaw(frame.orientation) == pytest.approx(0.0, abs=1e-3)
        assert (frame.index, frame.source, frame.topic) == (k, str(bag), topic)


def test_bag_keyframes_by_distance(tmp_path: Path) -> None:
    bag = _write_bag(tmp_path / "bag", StoragePlugin.MCAP)
    every = list(BagSource(bag, "/camera/image_raw", "/gps/fix"))
    kept = list(BagSource(bag, "/camera/image_raw", "/gps/fix", min_distance_m=2.0))
    assert [f.index for f in kept] == select_keyframes(
        [f.position for f in every], min_distance_m=2.0
    )
    gaps = np.diff([f.position[0] for f in kept])
    assert (gaps >= 2.0).all() and len(kept) == pytest.approx(
        (_east(2.95) - _east(0.05)) / 2.0, abs=3
    )


def test_bag_with_odometry_slerps_orientation(tmp_path: Path) -> None:
    bag = _write_bag(tmp_path / "bag", StoragePlugin.SQLITE3, pose="odom")
    frames = list(BagSource(bag, "/camera/image_raw", "/odom"))
    assert len(frames) == 30
    for frame in frames:
        t = frame.stamp_ns / S
        assert frame.position == pytest.approx([t, -t, 0.0], abs=1e-9)
        assert quaternion_to_yaw(frame.orientation) == pytest.approx(t / 2, abs=1e-6)
        assert frame.latlon is None and frame.utm_zone is None


def test_frames_before_gps_starts_get_no_pose_and_every_n(tmp_path: Path) -> None:
    # fixes 1.5, 2.0, (NO_FIX), 3.0
    bag = _write_bag(tmp_path / "bag", StoragePlugin.SQLITE3, gps_start_s=1.5)
    source = BagSource(bag, "/camera/image_raw", "/gps/fix", min_distance_m=1.0, every_n=3)
    frames = list(source)
    unposed = [f.index for f in frames if f.position is None]
    # frames 0..4 (t < 0.5 s) are > 1 s before the first fix: every 3rd kept
    assert unposed == [0, 3]
    assert source.stats.without_pose == 2 and all(
        f.position is not None for f in frames if f.index >= 5
    )
    # held, not extrapolated
    assert frames[2].position[0] == pytest.approx(_expected_east(1.5 * S, 1.5), abs=0.01)


def test_corrupt_image_in_a_good_bag_is_skipped_and_counted(tmp_path: Path, caplog) -> None:
    bag = _write_bag(
        tmp_path / "bag", StoragePlugin.MCAP, image="compressed", corrupt_frame=4, pose="none"
    )
    source = BagSource(bag, "/camera/image_raw/compressed", every_n=2)
    with caplog.at_level(logging.WARNING):
        frames = list(source)
    # Frame 4 was due but unreadable: frame 5 takes its place, then the every-2 rhythm resumes.
    assert [f.index for f in frames][:5] == [0, 2, 5, 7, 9]
    assert source.stats.corrupt_skipped == 1 and "truncated" in caplog.text
    assert frames[0].position is None and frames[0].orientation is None


def test_several_bags_share_one_index_range_and_utm_zone(tmp_path: Path) -> None:
    bags = [
        _write_bag(tmp_path / "a", StoragePlugin.SQLITE3),
        _write_bag(tmp_path / "b", StoragePlugin.MCAP),
    ]
    source = BagSource(bags, "/camera/image_raw", "/gps/fix", min_distance_m=5.0)
    frames = list(source)
    assert len(source) == 60
    assert {f.source for f in frames} == {str(b) for b in bags}
    assert frames[-1].index > 30 and [f.index for f in frames] == sorted(f.index for f in frames)
    assert [d["source"] for d in source.describe()] == [str(b) for b in bags]
    assert source.describe()[0]["pose_type"] == "sensor_msgs/msg/NavSatFix"


def test_missing_topic_lists_the_topics_the_bag_has(tmp_path: Path) -> None:
    bag = _write_bag(tmp_path / "bag", StoragePlugin.SQLITE3)
    with pytest.raises(BagError) as err:
        BagSource(bag, "/front/image", "/gps/fix")
    assert "no topic /front/image" in str(err.value)
    assert "image topics in the bag: /camera/image_raw" in str(
        err.value
    ) and "pose topics: /gps/fix" in str(err.value)
    with pytest.raises(BagError, match="not an image"):
        BagSource(bag, "/gps/fix")
    with pytest.raises(BagError, match="no topic /odom"):
        BagSource(bag, "/camera/image_raw", "/odom")


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_truncated_bag_names_the_bag_and_the_repair(
    tmp_path: Path, storage: StoragePlugin
) -> None:
    bag = _write_bag(tmp_path / "bag", storage)
    storage_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    data = storage_file.read_bytes()
    storage_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError) as err:
        list(BagSource(bag, "/camera/image_raw", "/gps/fix"))
    assert str(bag) in str(err.value) and "ros2 bag reindex" in str(err.value)


def test_sqlite_bag_corrupt_in_the_middle_fails_while_reading(tmp_path: Path) -> None:
    bag = _write_bag(tmp_path / "bag", StoragePlugin.SQLITE3)
    db = next(bag.glob("*.db3"))
    data = bytearray(db.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8192] = bytes(range(256)) * 32
    db.write_bytes(bytes(data))
    source = BagSource(bag, "/camera/image_raw", "/gps/fix")  # the header pages are intact
    with pytest.raises(BagError, match="damaged or truncated"):
        list(source)


def test_paths_that_are_not_bags(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="does not exist"):
        BagSource(tmp_path / "nope", "/camera/image_raw")
    with pytest.raises(BagError, match="not a rosbag2 directory"):
        BagSource(tmp_path, "/camera/image_raw")
    bag = _write_bag(tmp_path / "bag", StoragePlugin.SQLITE3)
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagError, match="no metadata.yaml.*ros2 bag reindex"):
        BagSource(bag, "/camera/image_raw")


def _write_jpg(path: Path, k: int) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(_colour(k), cv2.COLOR_RGB2BGR))


def test_vpr_filename_parse() -> None:
    pose = parse_vpr_filename("@0543256.96@4178906.34@10@S@37.75@-122.51@pano@@90@@@@@@.jpg")
    assert pose.position.tolist() == [543256.96, 4178906.34, 0.0]
    assert pose.utm_zone == "10S" and pose.latlon == (37.75, -122.51)
    # compass 90 (east) is ENU yaw 0
    assert quaternion_to_yaw(pose.orientation) == pytest.approx(0.0)
    short = parse_vpr_filename("@543256.96@4178906.34@.jpg")
    assert (
        short.position.tolist() == [543256.96, 4178906.34, 0.0]
        and short.utm_zone is None
        and short.latlon is None
    )
    derived = parse_vpr_filename("@0543256.96@4178906.34@@@37.75@-122.51@.png")
    assert derived.utm_zone == "10S" and derived.orientation is None
    assert parse_vpr_filename("images-00010.png") is None
    assert parse_vpr_filename("@north@east@x@.jpg") is None


def test_folder_with_vpr_names_sorted_non_images_ignored_corrupt_skipped(
    tmp_path: Path, caplog
) -> None:
    names = [f"@{500000 + 3 * k:.2f}@{1000 + k:.2f}@31@N@@@@.jpg" for k in range(5)]
    for k, name in enumerate(names):
        _write_jpg(tmp_path / name, k)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "@500100.00@1000.00@31@N@@@@.jpg").write_bytes(b"\xff\xd8 broken")
    source = FolderSource(tmp_path)
    assert len(source) == 6
    with caplog.at_level(logging.WARNING):
        frames = list(source)
    assert [f.topic for f in frames] == sorted(names)
    assert source.stats.corrupt_skipped == 1 and "skipping unreadable image" in caplog.text
    assert frames[1].position.tolist() == [500003.0, 1001.0, 0.0] and frames[1].utm_zone == "31N"
    assert abs(int(frames[1].image[5, 5, 0]) - 8) <= 2 and frames[0].stamp_ns == 0
    kept = list(FolderSource(tmp_path, min_distance_m=5.0))
    assert [f.position[0] for f in kept] == [500000.0, 500006.0, 500012.0]


def test_numbered_frames_in_natural_order(tmp_path: Path) -> None:
    names = [f"frame_{k}.jpg" for k in (10, 2, 1, 0, 11, 100, 9)]
    for k, name in enumerate(names):
        _write_jpg(tmp_path / name, k)
    frames = list(FolderSource(tmp_path))
    assert [f.topic for f in frames] == [
        f"frame_{k}.jpg" for k in (0, 1, 2, 9, 10, 11, 100)
    ]


def test_folder_with_xy_csv(tmp_path: Path) -> None:
    for k in range(3):
        _write_jpg(tmp_path / f"img_{k}.jpg", k)
    csv_path = tmp_path / "poses.csv"
    csv_path.write_text(
        "filename,x,y,z,qx,qy,qz,qw\nimg_0.jpg,1,2,3,0,0,0,1\nsub/img_2.jpg,4,5,6,0,0,1,0\n"
    )
    frames = list(FolderSource(tmp_path, poses_csv=csv_path))
    assert [f.topic for f in frames] == ["img_0.jpg", "img_1.jpg", "img_2.jpg"]
    assert frames[0].position.tolist() == [1.0, 2.0, 3.0] and frames[0].orientation.tolist() == [
        0,
        0,
        0,
        1,
    ]
    assert frames[1].position is None
    assert frames[2].position.tolist() == [4.0, 5.0, 6.0] and frames[2].utm_zone is None


def test_folder_with_latlon_csv(tmp_path: Path) -> None:
    for k in range(2):
        _write_jpg(tmp_path / f"{k}.png", k)
    csv_path = tmp_path / "gps.csv"
    # second one lies in zone 31
    csv_path.write_text("filename,lat,lon\n0.png,51.2,7.5\n1.png,51.2,5.9\n")
    frames = list(FolderSource(tmp_path, poses_csv=csv_path))
    assert frames[0].position[:2] == pytest.approx([395201.310, 5673135.241], abs=1e-3)
    assert frames[0].utm_zone == frames[1].utm_zone == "32U" and frames[1].latlon == (51.2, 5.9)
    # 1.6 deg west, one frame
    assert frames[1].position[0] == pytest.approx(395201.310 - 111_560, abs=1_000)


def test_bad_csv_and_folder_errors(tmp_path: Path) -> None:
    _write_jpg(tmp_path / "a.jpg", 0)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,east,north\na.jpg,1,2\n")
    with pytest.raises(VprError, match="need a header filename,x,y"):
        FolderSource(tmp_path, poses_csv=bad)
    bad.write_text("filename,x,y\na.jpg,1,oops\n")
    with pytest.raises(VprError, match="line 2"):
        FolderSource(tmp_path, poses_csv=bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VprError, match="no images"):
        FolderSource(empty)
    with pytest.raises(VprError, match="does not exist"):
        FolderSource(tmp_path / "missing")


@needs_shared("data", "nordland_trimmed", "summer")
def test_real_nordland_folder_without_poses() -> None:
    source = FolderSource(SHARED_SUMMER, every_n=500)
    frames = list(source)
    assert len(source) == 3576 and len(frames) == 8
    assert frames[0].topic == "images-00010.png" and frames[0].image.shape == (32, 64, 3)
    assert frames[1].index == 500 and frames[1].position is None
