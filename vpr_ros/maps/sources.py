"""
Frames for map building and offline queries, from rosbag2 recordings or image folders.

Every source has `len()` (candidate frames, for progress bars), lazy iteration yielding
`Frame`s (an image is decoded only once its frame is chosen as a keyframe, so memory stays
bounded), `stats` for the last pass and `describe()` for the map manifest.
"""

from __future__ import annotations

import csv
import logging
import math
import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import utm
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import ReaderError
from rosbags.typesys import Stores, get_typestore

from vpr_ros.errors import BagError, ImageDecodeError, VprError
from vpr_ros.imaging import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    image_files,
    image_msg_to_rgb,
    read_rgb,
)
from vpr_ros.maps.poses import (
    DEFAULT_MAX_GAP_S,
    DEFAULT_MAX_STAMP_SKEW_S,
    KeyframeSelector,
    PoseTrack,
    PoseTrackBuilder,
    UtmProjector,
    UtmZone,
    header_stamp_ns,
    yaw_to_quaternion,
)

log = logging.getLogger(__name__)

# Image messages read ahead to interpolate their poses in one call (a few raw frames in memory).
_POSE_CHUNK = 8

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = (
    "sensor_msgs/msg/NavSatFix",
    "nav_msgs/msg/Odometry",
    "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/PoseWithCovarianceStamped",
)


@dataclass
class Frame:
    """
    One camera frame with whatever pose is known. Mutable: consumers drop `image` once used.

    `topic` is the bag topic, or the file name for a folder; `stamp_ns` is 0 where a folder
    gives no time. Positions are metres (UTM easting, northing, altitude for GPS).
    """

    index: int
    stamp_ns: int
    image: np.ndarray | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    latlon: tuple[float, float] | None
    utm_zone: str | None
    source: str
    topic: str
    frame_id: str = ""  # the image header's frame_id (bags); empty for folders


@dataclass
class SourceStats:
    """
    Counts of the last iteration, for logs and the end-of-build report.

    `skipped` counts what was left out by "kind: reason" (kind: image, pose, stamp), e.g.
    "image: truncated JPEG" or "pose: no fix (status -1)"; `corrupt_skipped` is its image total.
    """

    yielded: int = 0
    corrupt_skipped: int = 0
    without_pose: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def skip(self, kind: str, reason: str, n: int = 1) -> None:
        self.skipped[f"{kind}: {reason}"] += n
        self.corrupt_skipped += n if kind == "image" else 0

    def report(self) -> str:
        """One line per kind of skip, most frequent first; "nothing skipped" when clean."""
        lines = [f"{n} x {what}" for what, n in self.skipped.most_common()]
        if self.without_pose:
            lines.append(
                f"{self.without_pose} x frame kept without a position (no pose within the allowed"
                " gap)"
            )
        return "\n".join(lines) or "nothing skipped"


def _default_typestore():
    # Used only for bags that do not embed their message definitions.
    return get_typestore(Stores.ROS2_KILTED)


# apsw: rosbags' sqlite3
_BAG_READ_ERRORS = (AnyReaderError, ReaderError, apsw.Error, struct.error, EOFError)
# One message's CDR that does not parse (rosbags wraps most of these in AnyReaderError): skip it,
# not the bag.
_MSG_DECODE_ERRORS = (AnyReaderError, ValueError, IndexError, struct.error, UnicodeDecodeError)


@contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """
    One rosbag2 directory (sqlite3 or mcap) opened for reading.

    The bag library's errors while opening or reading it become BagError naming the bag and the
    repair.
    """
    path = Path(path)
    with _bag_errors(path):
        reader = AnyReader([path], default_typestore=_default_typestore())
        reader.open()
        try:
            yield reader
        finally:
            reader.close()


@contextmanager
def _bag_errors(path: Path) -> Iterator[None]:
    """Turn the bag library's exceptions into BagError naming the bag and the repair."""
    try:
        yield
    except FileNotFoundError as err:
        raise BagError(_not_a_bag_message(path, err)) from err
    except _BAG_READ_ERRORS as err:
        raise BagError(
            f"rosbag {path} is damaged or truncated ({err}); a recording cut short by a crash or"
            f" full disk can often be repaired with `ros2 bag reindex {path}`, otherwise"
            " re-record it"
        ) from err


def _not_a_bag_message(path: Path, err: Exception) -> str:
    if not path.exists():
        return f"bag {path} does not exist: check the path"
    if path.is_file() and path.suffix in (".db3", ".mcap"):
        return (
            f"{path} is a storage file, not a bag: pass its directory {path.parent} (the one with"
            " metadata.yaml)"
        )
    if path.is_dir() and (any(path.glob("*.db3")) or any(path.glob("*.mcap"))):
        return (
            f"bag {path} has no metadata.yaml (the recording probably crashed): "
            f"run `ros2 bag reindex {path}` to regenerate it"
        )
    return (
        f"{path} is not a rosbag2 directory ({err}): pass a directory recorded by `ros2 bag"
        " record`"
    )


@dataclass(frozen=True)
class _BagInfo:
    path: Path
    image_type: str
    pose_type: str | None
    image_count: int


class BagSource:
    """
    Frames of `image_topic` from one or more rosbag2 directories (sqlite3 or mcap).

    With `pose_topic` (NavSatFix, Odometry, PoseStamped or PoseWithCovarianceStamped), the pose
    topic of each bag is read first and interpolated at every image stamp (header stamps; the bag
    time where a header stamp is 0 or more than `max_stamp_skew_s` from it, i.e. a clock jump or an
    unsynchronised clock). GPS positions are UTM in the zone of the first fix of the first bag, so
    several bags share one metric frame. Keyframes are chosen per bag: every `min_distance_m` of
    travel, or every `every_n`-th frame without poses. A corrupt image, a frame repeated (same
    stamp, same bytes) and an impossible pose are skipped and counted by reason in `stats`; a
    damaged bag raises BagError.
    """

    def __init__(
        self,
        paths: Sequence[str | Path] | str | Path,
        image_topic: str,
        pose_topic: str | None = None,
        min_distance_m: float = 0.0,
        every_n: int = 1,
        max_gap_s: float = DEFAULT_MAX_GAP_S,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_stamp_skew_s: float = DEFAULT_MAX_STAMP_SKEW_S,
    ) -> None:
        self.paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        if not self.paths:
            raise BagError("no bag given: pass at least one rosbag2 directory")
        self.image_topic, self.pose_topic = image_topic, pose_topic
        self.min_distance_m, self.every_n = min_distance_m, every_n
        KeyframeSelector(min_distance_m, every_n)  # validate now, not on first iteration
        self.max_gap_s, self.max_pixels, self.max_stamp_skew_s = (
            max_gap_s,
            max_pixels,
            max_stamp_skew_s,
        )
        self.stats = SourceStats()
        self._bags = [self._inspect(path) for path in self.paths]

    def __len__(self) -> int:
        return sum(bag.image_count for bag in self._bags)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "source": str(bag.path),
                "image_topic": self.image_topic,
                "image_type": bag.image_type,
                "pose_topic": self.pose_topic,
                "pose_type": bag.pose_type,
                "frames": bag.image_count,
                "min_distance_m": self.min_distance_m,
                "every_n": self.every_n,
            }
            for bag in self._bags
        ]

    def _inspect(self, path: Path) -> _BagInfo:
        with open_bag(path) as reader:
            types = {c.topic: c.msgtype for c in reader.connections}
            image_type = types.get(self.image_topic)
            pose_type = types.get(self.pose_topic) if self.pose_topic else None
            missing = [
                t
                for t, ty in ((self.image_topic, image_type), (self.pose_topic, pose_type))
                if t and ty is None
            ]
            if missing:
                raise BagError(
                    f"bag {path} has no topic {', '.join(missing)}; {_topics_summary(types)}"
                )
            if image_type not in IMAGE_TYPES:
                raise BagError(
                    f"topic {self.image_topic} in {path} is {image_type}, not an image;"
                    f" {_topics_summary(types)}"
                )
            if self.pose_topic and pose_type not in POSE_TYPES:
                raise BagError(
                    f"topic {self.pose_topic} in {path} is {pose_type}, not a pose;"
                    f" {_topics_summary(types)}"
                )
            count = sum(c.msgcount for c in reader.connections if c.topic == self.image_topic)
            return _BagInfo(path, image_type, pose_type, count)

    def __iter__(self) -> Iterator[Frame]:
        self.stats = SourceStats()
        projector = UtmProjector()  # shared by all bags: one UTM zone for the whole map
        index = 0
        for bag in self._bags:
            with open_bag(bag.path) as reader:
                track = self._read_track(reader, projector) if self.pose_topic else None
                yield from self._frames(reader, bag, track, index)
            index += bag.image_count

    def _stamp(self, msg: Any, bag_ns: int) -> int:
        stamp = header_stamp_ns(msg, bag_ns, self.max_stamp_skew_s)
        if stamp == bag_ns and header_stamp_ns(msg, bag_ns) != bag_ns:
            self.stats.skip(
                "stamp",
                f"header stamp over {self.max_stamp_skew_s:g} s from the recording time "
                "(clock jump or unsynchronised clock): used the recording time",
            )
        return stamp

    def _read_track(self, reader: AnyReader, projector: UtmProjector) -> PoseTrack:
        builder = PoseTrackBuilder(projector)
        connections = [c for c in reader.connections if c.topic == self.pose_topic]
        for connection, bag_ns, raw in reader.messages(connections=connections):
            try:
                msg = reader.deserialize(raw, connection.msgtype)
            except _MSG_DECODE_ERRORS:
                self.stats.skip("pose", "undeserialisable message")
                continue
            builder.add(self._stamp(msg, bag_ns), msg)
        track = builder.build()
        for reason, n in builder.skipped.items():
            self.stats.skip("pose", reason, n)
        if builder.skipped:
            log.warning(
                "%s: skipped pose messages: %s",
                reader.paths[0],
                ", ".join(f"{n} x {reason}" for reason, n in builder.skipped.most_common()),
            )
        return track

    def _frames(
        self, reader: AnyReader, bag: _BagInfo, track: PoseTrack | None, first_index: int
    ) -> Iterator[Frame]:
        selector = KeyframeSelector(self.min_distance_m, self.every_n)
        messages = self._image_messages(reader, bag)
        # Poses for a few frames at a time: numpy's per-call overhead, not the arithmetic, is
        # what one stamp at a time costs (and it holds the GIL the network's thread needs).
        while chunk := list(islice(messages, _POSE_CHUNK)):
            poses = self._poses(track, [stamp for _, _, stamp in chunk])
            for (offset, msg, stamp), (position, orientation, latlon) in zip(chunk, poses):
                if not selector.keep(position):
                    continue
                try:
                    image = image_msg_to_rgb(msg, self.max_pixels)
                except ImageDecodeError as err:
                    selector.forget_last()
                    self._skip_corrupt(bag.path, offset, err.reason, err)
                    continue
                self.stats.without_pose += track is not None and position is None
                self.stats.yielded += 1
                yield Frame(
                    first_index + offset, stamp, image, position, orientation, latlon,
                    track.utm_zone if track is not None and position is not None else None,
                    str(bag.path), self.image_topic, msg.header.frame_id,
                )

    def _image_messages(self, reader: AnyReader, bag: _BagInfo) -> Iterator[tuple[int, Any, int]]:
        """Yield (offset in the topic, message, stamp) of each image message, minus repeats."""
        connections = [c for c in reader.connections if c.topic == self.image_topic]
        previous: tuple[int, Any] = (-1, b"")
        for offset, (connection, bag_ns, raw) in enumerate(
            reader.messages(connections=connections)
        ):
            try:
                # A memoryview: the image's pixels stay a view of the bag's bytes (rosbags slices
                # its input, and slicing bytes would copy the whole image).
                msg = reader.deserialize(memoryview(raw), connection.msgtype)
            except _MSG_DECODE_ERRORS as err:
                self._skip_corrupt(bag.path, offset, "undeserialisable message", err)
                continue
            stamp = self._stamp(msg, bag_ns)
            # A driver or recorder repeating a frame (same stamp, same bytes): one place, not two.
            # A new image under a repeated stamp is kept: it is information, only its stamp is
            # poor.
            if (stamp, raw) == previous:
                self.stats.skip("image", "duplicate frame")
                continue
            previous = (stamp, raw)
            yield offset, msg, stamp

    def _poses(self, track: PoseTrack | None, stamps: list[int]) -> list[tuple]:
        """Return (position, orientation, latlon) at each stamp; Nones where there is no pose."""
        if track is None:
            return [(None, None, None)] * len(stamps)
        sample = track.interpolate(stamps, self.max_gap_s)
        return [
            (
                sample.positions[i],
                sample.orientations[i] if sample.orientations is not None else None,
                tuple(sample.latlons[i].tolist()) if sample.latlons is not None else None,
            )
            if sample.valid[i]
            else (None, None, None)
            for i in range(len(stamps))
        ]

    def _skip_corrupt(self, path: Path, offset: int, reason: str, err: Exception) -> None:
        self.stats.skip("image", reason)
        log.warning(
            "skipping corrupt image (%s %s message %d): %s", path, self.image_topic, offset, err
        )


def _topics_summary(types: dict[str, str]) -> str:
    images = sorted(t for t, ty in types.items() if ty in IMAGE_TYPES)
    poses = sorted(t for t, ty in types.items() if ty in POSE_TYPES)
    return (
        f"image topics in the bag: {', '.join(images) or 'none'}; pose topics:"
        f" {', '.join(poses) or 'none'} (all topics: {', '.join(sorted(types)) or 'none'})"
    )


@dataclass(frozen=True)
class _Pose:
    position: np.ndarray
    orientation: np.ndarray | None = None
    latlon: tuple[float, float] | None = None
    utm_zone: str | None = None


def parse_vpr_filename(name: str) -> _Pose | None:
    """
    Pose from the standard VPR dataset file name (gmberton's VPR-datasets-downloader).

    @utm_east@utm_north@zone_number@zone_letter@lat@lon@pano_id@tile_num@heading@pitch@roll@height@timestamp@note@.jpg

    Only easting and northing are required. `heading` is a compass bearing (0 = north,
    clockwise) and becomes an ENU yaw. None when the name does not follow the layout.
    """
    fields = Path(name).stem.split("@") if name.count("@") >= 3 else []

    def number(i: int) -> float | None:
        return float(fields[i]) if len(fields) > i and fields[i] else None

    try:
        easting, northing = number(1), number(2)
        lat, lon, heading = number(5), number(6), number(9)
    except ValueError:
        return None
    if easting is None or northing is None:
        return None
    latlon = (lat, lon) if lat is not None and lon is not None else None
    zone = None
    if len(fields) > 4 and fields[3] and fields[4]:
        zone = f"{int(float(fields[3]))}{fields[4]}"
    elif latlon is not None:
        zone = str(UtmZone(*utm.from_latlon(*latlon)[2:]))
    orientation = (
        yaw_to_quaternion(np.array(math.radians(90.0 - heading))) if heading is not None else None
    )
    return _Pose(np.array([easting, northing, 0.0]), orientation, latlon, zone)


def read_poses_csv(path: Path) -> dict[str, _Pose]:
    """
    Read file name -> pose from a CSV with a header.

    The header: filename,x,y[,z][,qx,qy,qz,qw] or filename,lat,lon. The first column is the file
    name (matched by base name). lat/lon become UTM in the first row's zone.
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise VprError(
            f"poses CSV {path} is empty: it needs a header row such as filename,x,y or"
            " filename,lat,lon"
        )
    header = [h.strip().lower() for h in rows[0]]
    columns = {name: i for i, name in enumerate(header)}
    is_gps = {"lat", "lon"} <= columns.keys()
    if not is_gps and not {"x", "y"} <= columns.keys():
        raise VprError(
            f"poses CSV {path} has columns {rows[0]}: need a header filename,x,y[,z][,qx,qy,qz,qw]"
            " or filename,lat,lon"
        )
    has_quaternion = {"qx", "qy", "qz", "qw"} <= columns.keys()
    projector = UtmProjector()
    poses: dict[str, _Pose] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue

        def value(name: str) -> float:
            return float(row[columns[name]])

        try:
            if is_gps:
                lat, lon = value("lat"), value("lon")
                easting, northing = projector.project(lat, lon)
                pose = _Pose(
                    np.array([easting, northing, 0.0]), None, (lat, lon), str(projector.zone)
                )
            else:
                z = value("z") if "z" in columns else 0.0
                quaternion = (
                    np.array([value(k) for k in ("qx", "qy", "qz", "qw")])
                    if has_quaternion
                    else None
                )
                pose = _Pose(np.array([value("x"), value("y"), z]), quaternion)
        except (ValueError, IndexError) as err:
            raise VprError(
                f"poses CSV {path} line {line} {row}: {err}; fix or remove that row"
            ) from err
        poses[Path(row[0].strip()).name] = pose
    return poses


class FolderSource:
    """
    Image files of one folder (not recursive), in natural file-name order (frame_2, frame_10).

    Poses from `poses_csv` when given, else from VPR-layout file names where they follow it
    (see parse_vpr_filename); frames without either have no pose. Non-image files are
    ignored; an unreadable image is skipped with a warning and counted in `stats`.
    """

    def __init__(
        self,
        folder: str | Path,
        poses_csv: str | Path | None = None,
        min_distance_m: float = 0.0,
        every_n: int = 1,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise VprError(
                f"image folder {self.folder} does not exist or is not a directory: check the path"
            )
        self.files = image_files(self.folder)
        if not self.files:
            raise VprError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}: check the path"
            )
        self.poses_csv = Path(poses_csv) if poses_csv else None
        self._csv_poses = read_poses_csv(self.poses_csv) if self.poses_csv else None
        self.min_distance_m, self.every_n = min_distance_m, every_n
        KeyframeSelector(min_distance_m, every_n)
        self.max_pixels = max_pixels
        self.stats = SourceStats()

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> list[dict[str, Any]]:
        poses = f"csv:{self.poses_csv}" if self.poses_csv else "file names"
        return [{"source": str(self.folder), "poses": poses, "frames": len(self.files),
                 "min_distance_m": self.min_distance_m, "every_n": self.every_n}]

    def pose_of(self, path: Path) -> _Pose | None:
        if self._csv_poses is not None:
            return self._csv_poses.get(path.name)
        return parse_vpr_filename(path.name)

    def __iter__(self) -> Iterator[Frame]:
        self.stats = SourceStats()
        selector = KeyframeSelector(self.min_distance_m, self.every_n)
        for index, path in enumerate(self.files):
            pose = self.pose_of(path)
            if not selector.keep(pose.position if pose else None):
                continue
            try:
                image = read_rgb(path, self.max_pixels)
            except ImageDecodeError as err:
                selector.forget_last()
                self.stats.skip("image", err.reason)
                log.warning("skipping unreadable image %s: %s", path, err)
                continue
            self.stats.without_pose += pose is None
            self.stats.yielded += 1
            yield Frame(
                index, 0, image,
                pose.position if pose else None, pose.orientation if pose else None,
                pose.latlon if pose else None, pose.utm_zone if pose else None,
                str(self.folder), path.name,
            )
