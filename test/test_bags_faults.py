"""
Faulty bags through build-map: every fault skipped and counted, or the build refused by name.

Real rosbag2 bags written with rosbags (sqlite3 and mcap). Each fault is either skipped,
counted by reason and the map built correctly from the rest, or the build refused with a
clear error and nothing written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import utm
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vpr_ros.cli import main
from vpr_ros.errors import BagError, PoseError
from vpr_ros.imaging import rgb_to_compressed, rgb_to_image_fields
from vpr_ros.maps.mapdir import load_map
from vpr_ros.maps.sources import BagSource

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
S = 1_000_000_000
T0 = 1_700_000_000 * S  # a realistic epoch, so clock jumps and zero stamps differ from it
E0, N0, ZONE = 400_000.0, 5_000_000.0, (32, "U")
SPEED = 10.0  # m/s east: positions are linear in time, so interpolation is exact
CAMERA, GPS = "/camera/image_raw", "/gps/fix"


def _header(stamp_ns: int, frame_id: str):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // S, nanosec=stamp_ns % S),
        frame_id=frame_id,
    )


def _latlon(t_s: float) -> tuple[float, float]:
    return utm.to_latlon(E0 + SPEED * t_s, N0, *ZONE)


def _rgb(k: int) -> np.ndarray:
    rgb = np.empty((24, 32, 3), np.uint8)
    rgb[:] = (7 * k % 256, 90, 180)
    return rgb


@dataclass
class Recording:
    """A 4 s drive: camera at 10 Hz, GPS at 5 Hz. Each fault edits these lists before writing."""

    frames: list[dict] = field(default_factory=lambda: [
        {"t": 0.05 + k / 10, "bag_t": 0.07 + k / 10, "k": k, "fields": None} for k in range(40)])
    fixes: list[dict] = field(
        default_factory=lambda: [
            {"t": k / 5, "bag_t": k / 5 + 0.01, "latlon": _latlon(k / 5), "status": 0}
            for k in range(21)
        ]
    )
    compressed: bool = False

    def write(self, path: Path, storage: StoragePlugin = StoragePlugin.SQLITE3) -> Path:
        camera_type = (
            "sensor_msgs/msg/CompressedImage" if self.compressed else "sensor_msgs/msg/Image"
        )
        with Writer(path, version=9, storage_plugin=storage) as writer:
            cam = writer.add_connection(CAMERA, camera_type, typestore=TS)
            gps = writer.add_connection(GPS, "sensor_msgs/msg/NavSatFix", typestore=TS)
            events = []
            for fix in self.fixes:
                lat, lon = fix["latlon"]
                msg = T["sensor_msgs/msg/NavSatFix"](
                    header=_header(T0 + int(round(fix["t"] * S)), "gps"),
                    status=T["sensor_msgs/msg/NavSatStatus"](status=fix["status"], service=1),
                    latitude=lat, longitude=lon, altitude=50.0, position_covariance=np.zeros(9),
                    position_covariance_type=0)
                data = fix.get("raw") or TS.serialize_cdr(msg, msg.__msgtype__)
                events.append((fix["bag_t"], gps, data))
            for frame in self.frames:
                header = _header(
                    T0 + int(round(frame["t"] * S)) if frame["t"] is not None else 0, "camera"
                )
                if self.compressed:
                    fmt, data = frame["fields"] or rgb_to_compressed(_rgb(frame["k"]), "jpeg", 95)
                    msg = T["sensor_msgs/msg/CompressedImage"](header=header, format=fmt,
                                                               data=np.frombuffer(data, np.uint8))
                else:
                    fields = frame["fields"] or rgb_to_image_fields(_rgb(frame["k"]), "rgb8")
                    msg = T["sensor_msgs/msg/Image"](header=header, **fields)
                events.append((frame["bag_t"], cam, TS.serialize_cdr(msg, msg.__msgtype__)))
            # written in the order given: a recorder's order may be odd
            for bag_t, conn, data in events:
                writer.write(conn, T0 + int(round(bag_t * S)), data)
        return path


def _frames(bag: Path, **kw) -> tuple[list, BagSource]:
    source = BagSource(bag, CAMERA, GPS, **kw)
    return list(source), source


def _assert_positions_right(frames, tolerance_m: float = 0.05) -> None:
    for f in frames:
        t = (f.stamp_ns - T0) / S
        assert f.position[0] == pytest.approx(E0 + SPEED * t, abs=tolerance_m), t
        assert f.position[1] == pytest.approx(N0, abs=0.05)


def _build(bag: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "build-map",
            "--bag",
            str(bag),
            "--image-topic",
            CAMERA,
            "--pose-topic",
            GPS,
            "--min-distance",
            "0",
            "--model",
            "raw-pixels",
            "--out",
            str(out),
            *extra,
        ]
    )


# --- impossible fixes (defect 5) ----------------------------------------------------------------


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_impossible_fixes_are_skipped_per_message_and_counted(
    tmp_path: Path, storage, capsys
) -> None:
    rec = Recording()
    bad = {
        3: (95.0, 10.0, 0),
        5: (math.nan, math.nan, 0),
        7: (*_latlon(1.4), -1),
        9: (0.0, 0.0, 0),
        11: (85.0, 9.0, 0),
        13: (48.0, 200.0, 0),
    }
    for i, (lat, lon, status) in bad.items():
        rec.fixes[i].update(latlon=(lat, lon), status=status)
    bag = rec.write(tmp_path / "bag", storage)
    frames, source = _frames(bag)
    # gaps of 0.4 s stay under max_gap_s
    assert len(frames) == 40 and source.stats.without_pose == 0
    _assert_positions_right(frames)
    assert dict(source.stats.skipped) == {
        "pose: latitude/longitude out of range": 2, "pose: NaN or infinite coordinates": 1,
        "pose: no fix (status -1)": 1, "pose: (0, 0) placeholder": 1,
        "pose: outside UTM (latitude beyond 84 N / 80 S)": 1}
    assert _build(bag, tmp_path / "map") == 0
    report = capsys.readouterr().out
    assert (
        "2 x pose: latitude/longitude out of range" in report
        and "1 x pose: (0, 0) placeholder" in report
    )
    places = load_map(tmp_path / "map").places
    assert len(places) == 40
    for place in places:  # the map holds the right positions, not just the right count
        assert place.x == pytest.approx(E0 + SPEED * (place.stamp_ns - T0) / S, abs=0.05)
        assert place.y == pytest.approx(N0, abs=0.05) and place.utm_zone == "32T"


@pytest.mark.parametrize(
    ("latlon", "status", "reason"),
    [
        ((95.0, 10.0), 0, "out of range"),
        ((math.nan, math.nan), 0, "NaN"),
        ((48.1, 11.5), -1, "no fix"),
        ((0.0, 0.0), 0, "(0, 0) placeholder"),
    ],
)
def test_a_map_with_no_usable_position_is_refused_unless_asked_for(
    tmp_path: Path, latlon, status, reason, capsys
) -> None:
    rec = Recording()
    for fix in rec.fixes:
        fix.update(latlon=latlon, status=status)
    bag = rec.write(tmp_path / "bag")
    assert _build(bag, tmp_path / "map") == 2
    err = capsys.readouterr().err
    assert (
        "has a usable position" in err
        and "--allow-no-poses" in err
        and "21 x pose: " in err
        and reason in err
    )
    assert not (tmp_path / "map").exists()
    assert _build(bag, tmp_path / "map", "--allow-no-poses") == 0
    places = load_map(tmp_path / "map").places
    assert len(places) == 40 and all(math.isnan(p.x) for p in places)


def test_build_map_refuses_in_python_too(tmp_path: Path) -> None:
    from vpr_ros.inference.factory import create_extractor
    from vpr_ros.maps.build import build_map

    rec = Recording()
    for fix in rec.fixes:
        fix["status"] = -1
    source = BagSource(rec.write(tmp_path / "bag"), CAMERA, GPS)
    with pytest.raises(PoseError, match="none of the 40 frames"):
        build_map(source, create_extractor("raw-pixels"), tmp_path / "map")


# --- bad frames never abort a build (defect 4 in build-map) --------------------------------------

def test_bad_raw_frames_are_skipped_and_the_build_completes(tmp_path: Path, capsys) -> None:
    rec = Recording()
    odd = {
        "height": 4,
        "width": 5,
        "encoding": "yuv422",
        "is_bigendian": 0,
        "step": 10,
        "data": np.zeros(40, np.uint8),
    }
    short = {**rgb_to_image_fields(_rgb(0), "rgb8"), "step": 10}
    rec.frames[4]["fields"], rec.frames[9]["fields"] = odd, short
    bag = rec.write(tmp_path / "bag", StoragePlugin.MCAP)
    assert _build(bag, tmp_path / "map") == 0
    out = capsys.readouterr().out
    assert (
        "1 x image: odd width for YUV 4:2:2" in out and "1 x image: step smaller than a row" in out
    )
    assert len(load_map(tmp_path / "map").places) == 38


def test_bad_compressed_frames_are_skipped_and_the_build_completes(tmp_path: Path) -> None:
    rec = Recording(compressed=True)
    textured = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    # large enough that 40 % ends in the entropy data
    good = rgb_to_compressed(textured, "jpeg", 95)[1]
    # cut, end marker appended
    rec.frames[3]["fields"] = ("jpeg", good[: int(len(good) * 0.4)] + b"\xff\xd9")
    rec.frames[6]["fields"] = ("jpeg", b"")
    rec.frames[8]["fields"] = ("png", b"\x89PNG\r\n\x1a\n" + bytes(40))
    frames, source = _frames(rec.write(tmp_path / "bag"))
    assert len(frames) == 37 and 3 not in [f.index for f in frames]
    assert source.stats.skipped == {
        "image: truncated JPEG": 1,
        "image: empty data": 1,
        "image: corrupt PNG header": 1,
    }
    _assert_positions_right(frames)


# --- stamps: duplicates, order, clock jumps, dropouts --------------------------------------------

def test_duplicated_and_out_of_order_stamps(tmp_path: Path) -> None:
    rec = Recording()
    rec.frames.insert(11, {**rec.frames[10]})  # the driver sent frame 10 twice
    rec.fixes.insert(6, {**rec.fixes[5]})  # and the GPS repeated a fix
    rec.fixes[8], rec.fixes[9] = rec.fixes[9], rec.fixes[8]  # recorded out of order
    rec.frames[20], rec.frames[21] = rec.frames[21], rec.frames[20]
    frames, source = _frames(rec.write(tmp_path / "bag"))
    assert len(frames) == 40 and len({f.stamp_ns for f in frames}) == 40
    assert source.stats.skipped == {"image: duplicate frame": 1, "pose: duplicate stamp": 1}
    _assert_positions_right(frames)


def test_camera_clock_jump_uses_the_recording_time(tmp_path: Path) -> None:
    rec = Recording()
    for frame in rec.frames[20:25]:
        frame["t"] -= 60.0  # the driver's clock jumped back a minute, then recovered
    rec.frames[30]["t"] = None  # and one frame was never stamped
    for fix in rec.fixes[12:15]:
        fix["t"] += 3600.0  # the GPS clock glitched an hour ahead for three fixes
    frames, source = _frames(rec.write(tmp_path / "bag"))
    assert len(frames) == 40
    jumped = {f.index: f for f in frames if f.index in (20, 21, 22, 23, 24, 30)}
    for k, f in jumped.items():
        # The recording time is 20 ms after the true stamp: 0.2 m of travel, not 600 m.
        assert f.position[0] == pytest.approx(E0 + SPEED * (0.07 + k / 10), abs=0.15)
    assert source.stats.skipped == {
        "stamp: header stamp over 5 s from the recording time (clock jump or unsynchronised"
        " clock): used the recording time": 8
    }
    # Fixes on the recording time are 10 ms late: 0.1 m at 10 m/s, where a glitch would have cost
    # kilometres.
    _assert_positions_right([f for f in frames if f.index not in jumped], tolerance_m=0.15)


def test_gps_dropout_leaves_frames_without_position_counted(tmp_path: Path, capsys) -> None:
    rec = Recording()
    del rec.fixes[5:17]  # no fix between 0.8 s and 3.4 s
    bag = rec.write(tmp_path / "bag")
    frames, source = _frames(bag)
    unposed = [f.index for f in frames if f.position is None]
    assert unposed == list(range(18, 24))  # more than max_gap_s (1 s) from the nearest fix
    assert source.stats.without_pose == 6
    _assert_positions_right([f for f in frames if f.position is not None])
    assert _build(bag, tmp_path / "map") == 0
    assert "6 x frame kept without a position" in capsys.readouterr().out


def test_undeserialisable_pose_message_is_skipped(tmp_path: Path) -> None:
    rec = Recording()
    rec.fixes[4]["raw"] = b"\x00\x01\x00\x00" + b"\xff" * 7  # CDR header and then nonsense
    frames, source = _frames(rec.write(tmp_path / "bag"))
    assert len(frames) == 40 and source.stats.skipped == {"pose: undeserialisable message": 1}
    _assert_positions_right(frames)


# --- damaged bags and missing topics: refused clearly, nothing written ---------------------------


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
@pytest.mark.parametrize("keep", [0.3, 0.7])
def test_truncated_bag_is_refused_and_nothing_written(
    tmp_path: Path, storage, keep: float, capsys
) -> None:
    bag = Recording().write(tmp_path / "bag", storage)
    data_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    data_file.write_bytes(data_file.read_bytes()[: int(data_file.stat().st_size * keep)])
    assert _build(bag, tmp_path / "map") == 2
    err = capsys.readouterr().err
    assert str(bag) in err and ("reindex" in err or "re-record" in err)
    assert not (tmp_path / "map").exists()


def test_missing_pose_topic_is_refused_naming_the_topics(tmp_path: Path, capsys) -> None:
    bag = Recording().write(tmp_path / "bag", StoragePlugin.MCAP)
    assert main(["build-map", "--bag", str(bag), "--image-topic", CAMERA, "--pose-topic", "/fix",
                 "--model", "raw-pixels", "--out", str(tmp_path / "map")]) == 2
    err = capsys.readouterr().err
    assert "no topic /fix" in err and GPS in err
    assert not (tmp_path / "map").exists()


def test_bag_with_no_readable_frame_is_refused(tmp_path: Path, capsys) -> None:
    rec = Recording(compressed=True)
    for frame in rec.frames:
        frame["fields"] = ("jpeg", b"\xff\xd8\xff")
    assert _build(rec.write(tmp_path / "bag"), tmp_path / "map") == 2
    err = capsys.readouterr().err
    assert "no usable frame" in err and "40 x image: truncated JPEG" in err
    assert not (tmp_path / "map").exists()


def test_the_player_opens_bags_the_same_way(tmp_path: Path) -> None:
    pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels) is not installed")
    from vpr_harness.replay.player import read_image_messages

    bag = Recording().write(tmp_path / "bag", StoragePlugin.MCAP)
    cls, messages = read_image_messages(bag, CAMERA)
    assert cls.__name__ == "Image" and len(messages) == 40
    with pytest.raises(BagError, match=f"no Image/CompressedImage topic {GPS}"):
        read_image_messages(bag, GPS)
    with pytest.raises(BagError, match="does not exist"):
        read_image_messages(tmp_path / "nope", CAMERA)
