"""
Two drives around one loop of the demo city, written as real rosbag2 files.

The map drive is a sunny summer day in the right lane at constant speed; the
query drive is an autumn dusk a month later: other light, haze, bare-ish trees,
lit windows, other parked cars, about a metre further left with a wandering lane
position and yaw, a lower camera, and another, varying speed, so no query frame
sits exactly on a map frame. GPS (5 Hz) and odometry (10 Hz) are stamped between
camera frames, so a reader has to interpolate poses.

With ``excursions`` (the demo's), the query drive also leaves the mapped area for a stretch (it
goes round a block by streets the map drive never took) and is once carried to another part of the
loop, as a robot picked up and put down elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import utm
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from vpr_harness.demo.world import Appearance, CameraPose, StreetWorld
from vpr_ros.evaluation.recall import positives_by_distance
from vpr_ros.imaging import rgb_to_compressed
from vpr_ros.stamps import ns_to_sec_nanosec

CAMERA_TOPIC = "/camera/image_raw"
COMPRESSED_CAMERA_TOPIC = "/camera/image_raw/compressed"
GPS_TOPIC = "/gps/fix"
ODOM_TOPIC = "/odom"
CAMERA_HZ = 10.0
GPS_HZ = 5.0
# Local metres (x east, y north) are offsets from this point (Trondheim, UTM zone 32V).
ORIGIN_LATLON = (63.4305, 10.3951)
# Street intersections the loop passes, in local metres (the city's street grid has a 60 m pitch).
DEMO_LOOP = ((60, 60), (240, 60), (240, 120), (180, 120), (180, 180), (60, 180))
# The query's loop with excursions: past the map's turn at (240, 60) to x = 300 and back along
# y = 120, a detour of 120 m by streets the map drive never took.
DETOUR_LOOP = ((60, 60), (300, 60), (300, 120), (180, 120), (180, 180), (60, 180))
# With excursions, the query is carried at this share of its frames this far along its loop (at 400
# frames from y = 120 near x = 210 to y = 180 near x = 150: 83 m away, out of sight).
JUMP_AT_SHARE, JUMP_M = 0.64, 110.0
MAP_EPOCH_NS = 1_750_000_000 * 10**9
QUERY_EPOCH_NS = MAP_EPOCH_NS + 30 * 86_400 * 10**9  # a month later
RECOMMENDED_MATCH_RADIUS_M = 10.0


class LoopRoute:
    """
    A closed street centreline through `waypoints` with rounded corners.

    Parametrised by arc length.
    """

    def __init__(self, waypoints, corner_radius_m: float = 8.0, step_m: float = 0.05) -> None:
        corners = np.asarray(waypoints, np.float64)
        arcs = []
        for k in range(len(corners)):
            prev, here, nxt = corners[k - 1], corners[k], corners[(k + 1) % len(corners)]
            d_in = (here - prev) / np.linalg.norm(here - prev)
            d_out = (nxt - here) / np.linalg.norm(nxt - here)
            turn = math.atan2(d_in[0] * d_out[1] - d_in[1] * d_out[0], d_in @ d_out)
            start = here - d_in * corner_radius_m * math.tan(abs(turn) / 2)
            centre = start + np.array([-d_in[1], d_in[0]]) * corner_radius_m * np.sign(turn)
            angles = np.linspace(0.0, turn, max(int(abs(turn) * corner_radius_m / step_m), 2))
            rot = np.stack(
                [np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], 1
            ).reshape(-1, 2, 2)
            arcs.append(centre + rot @ (start - centre))
        # Consecutive arcs are joined by the straight streets; close the loop and resample evenly.
        points = np.concatenate(arcs + [arcs[0][:1]])
        along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
        self.length_m = float(along[-1])
        self._s = np.arange(0.0, self.length_m, step_m)
        self._xy = np.stack(
            [np.interp(self._s, along, points[:, 0]), np.interp(self._s, along, points[:, 1])], 1
        )
        # interpolated as a vector: no wrap
        self._tangent = np.roll(self._xy, -1, 0) - np.roll(self._xy, 1, 0)

    def at(self, s_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """
        Return centreline positions [N, 2] and headings [N] (radians) at arc lengths `s_m`.

        Arc lengths wrap around.
        """
        s = np.asarray(s_m, np.float64)
        xy, tangent = (
            [np.interp(s, self._s, table[:, axis], period=self.length_m) for axis in (0, 1)]
            for table in (self._xy, self._tangent)
        )
        return np.stack(xy, -1), np.arctan2(tangent[1], tangent[0])


@dataclass(frozen=True)
class Drive:
    """
    Where the camera is at time t (seconds from the start) on a route.

    Speed, lane and yaw profiles.
    """

    route: LoopRoute
    start_m: float
    mean_speed_mps: float
    speed_variation: float  # relative amplitude of a slow speed oscillation
    # from the centreline, positive to the left (right-hand traffic: negative)
    lane_offset_m: float
    lane_wander_m: float
    yaw_wander_rad: float
    camera_height_m: float
    phase: float  # de-correlates the wander of two drives
    jump_at_s: float = math.inf  # when the camera is carried `jump_m` further along the route
    jump_m: float = 0.0

    def driven(self, t: np.ndarray) -> np.ndarray:
        """Arc length the wheels have covered at times `t`: what odometry sees (no jump)."""
        omega = 2 * math.pi / 23.0  # one speed cycle every 23 s
        # integral of the oscillation
        surge = self.speed_variation * (1 - np.cos(omega * t + self.phase)) / omega
        return self.start_m + self.mean_speed_mps * (t + surge)

    def arc_length(self, t: np.ndarray) -> np.ndarray:
        """Where on the route the camera is at times `t`."""
        t = np.asarray(t, np.float64)
        return self.driven(t) + np.where(t >= self.jump_at_s, self.jump_m, 0.0)

    def poses(self, t: np.ndarray, odometry: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """
        Camera positions [N, 2] (local metres) and yaws [N] at times `t` [N] seconds.

        ``odometry``: where the wheels alone would put it, i.e. as if it had not been carried.
        """
        t = np.asarray(t, np.float64)
        s = self.driven(t) if odometry else self.arc_length(t)
        centre, heading = self.route.at(s)
        lateral = self.lane_offset_m + self.lane_wander_m * np.sin(
            2 * math.pi * s / 170.0 + self.phase
        )
        left = np.stack([-np.sin(heading), np.cos(heading)], -1)
        yaw = heading + self.yaw_wander_rad * np.sin(2 * math.pi * s / 65.0 + 2 * self.phase)
        return centre + lateral[:, None] * left, yaw


@dataclass(frozen=True)
class Traversal:
    """One drive under one appearance: camera frames at 10 Hz from `epoch_ns`."""

    drive: Drive
    appearance: Appearance
    frames: int
    epoch_ns: int

    @property
    def frame_times_s(self) -> np.ndarray:
        return np.arange(self.frames) / CAMERA_HZ

    def frame_stamps_ns(self) -> np.ndarray:
        return self.epoch_ns + np.round(self.frame_times_s * 1e9).astype(np.int64)

    def frame_positions(self) -> np.ndarray:
        """Ground-truth camera positions [frames, 2] in local metres."""
        return self.drive.poses(self.frame_times_s)[0]

    def jump_frame(self) -> int | None:
        """Index of the first frame after the camera was carried, or None."""
        after = np.flatnonzero(self.frame_times_s >= self.drive.jump_at_s)
        return int(after[0]) if len(after) else None

    def camera_poses(self) -> list[CameraPose]:
        xy, yaw = self.drive.poses(self.frame_times_s)
        height = self.drive.camera_height_m
        return [
            CameraPose(float(x), float(y), float(a), height=height) for (x, y), a in zip(xy, yaw)
        ]


def demo_traversals(
    frames: int = 400, route: LoopRoute | None = None, excursions: bool = False
) -> tuple[Traversal, Traversal]:
    """
    Return the map traversal and the query traversal.

    The map traversal has `frames` frames, once around the loop; the query traversal is
    faster, with fewer frames. With ``excursions`` the query drives DETOUR_LOOP and is carried
    JUMP_M along it at JUMP_AT_SHARE of its frames.
    """
    route = route or LoopRoute(DEMO_LOOP)
    map_speed = route.length_m / (frames / CAMERA_HZ)
    map_drive = Drive(
        route,
        start_m=0.0,
        mean_speed_mps=map_speed,
        speed_variation=0.03,
        lane_offset_m=-2.5,
        lane_wander_m=0.15,
        yaw_wander_rad=math.radians(0.5),
        camera_height_m=1.6,
        phase=0.0,
    )
    query_speedup = 1.12
    query_frames = int(frames / query_speedup)
    query_drive = Drive(
        LoopRoute(DETOUR_LOOP) if excursions else route,
        start_m=7.3,
        mean_speed_mps=map_speed * query_speedup,
        speed_variation=0.15,
        lane_offset_m=-1.5,
        lane_wander_m=0.6,
        yaw_wander_rad=math.radians(3.0),
        camera_height_m=1.45,
        phase=1.7,
        jump_at_s=JUMP_AT_SHARE * query_frames / CAMERA_HZ if excursions else math.inf,
        jump_m=JUMP_M if excursions else 0.0,
    )
    return (Traversal(map_drive, Appearance.sunny_summer(), frames, MAP_EPOCH_NS),
            Traversal(query_drive, Appearance.autumn_dusk(), query_frames, QUERY_EPOCH_NS))


def ground_truth(query: Traversal, reference: Traversal,
                 radius_m: float = RECOMMENDED_MATCH_RADIUS_M) -> list[np.ndarray]:
    """Return, for each query frame, the reference frames whose camera was within `radius_m` m."""
    return positives_by_distance(query.frame_positions(), reference.frame_positions(), radius_m)


def local_to_utm(xy: np.ndarray) -> np.ndarray:
    """Local metres [N, 2] -> UTM easting and northing [N, 2]: where map positions live."""
    east0, north0, _, _ = utm.from_latlon(*ORIGIN_LATLON)
    return np.asarray(xy, np.float64) + [east0, north0]


def local_to_latlon(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local metres (east, north) around ORIGIN_LATLON -> (latitude, longitude) degrees."""
    east0, north0, zone, letter = utm.from_latlon(*ORIGIN_LATLON)
    return utm.to_latlon(east0 + xy[:, 0], north0 + xy[:, 1], zone, letter)


class _BagMessages:
    """
    Builds and serialises the demo's messages (camera, GPS fix, odometry).

    With the ROS 2 Kilted types.
    """

    def __init__(self, compressed: bool) -> None:
        self.store = get_typestore(Stores.ROS2_KILTED)
        self.compressed = compressed
        self.types = self.store.types

    def _header(self, stamp_ns: int, frame_id: str):
        sec, nanosec = ns_to_sec_nanosec(stamp_ns)
        return self.types["std_msgs/msg/Header"](
            stamp=self.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
            frame_id=frame_id,
        )

    def image(self, rgb: np.ndarray, stamp_ns: int) -> bytes:
        if self.compressed:
            fmt, jpeg = rgb_to_compressed(rgb, "jpeg", quality=90)
            msg = self.types["sensor_msgs/msg/CompressedImage"](
                header=self._header(stamp_ns, "camera"),
                format=fmt,
                data=np.frombuffer(jpeg, np.uint8),
            )
        else:
            h, w, _ = rgb.shape
            msg = self.types["sensor_msgs/msg/Image"](
                header=self._header(stamp_ns, "camera"),
                height=h,
                width=w,
                encoding="rgb8",
                is_bigendian=0,
                step=w * 3,
                data=rgb.reshape(-1),
            )
        return self.store.serialize_cdr(msg, msg.__msgtype__)

    def fix(self, lat: float, lon: float, stamp_ns: int) -> bytes:
        # STATUS_FIX, SERVICE_GPS
        status = self.types["sensor_msgs/msg/NavSatStatus"](status=0, service=1)
        msg = self.types["sensor_msgs/msg/NavSatFix"](
            header=self._header(stamp_ns, "gps"),
            status=status,
            latitude=float(lat),
            longitude=float(lon),
            altitude=12.0,
            position_covariance=np.diag([0.05, 0.05, 0.2]).ravel(),
            position_covariance_type=2,
        )
        return self.store.serialize_cdr(msg, msg.__msgtype__)

    def odometry(self, xy: np.ndarray, yaw: float, speed: float, stamp_ns: int) -> bytes:
        t = self.types
        pose = t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=float(xy[0]), y=float(xy[1]), z=0.0),
            orientation=t["geometry_msgs/msg/Quaternion"](
                x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)
            ),
        )
        twist = t["geometry_msgs/msg/Twist"](
            linear=t["geometry_msgs/msg/Vector3"](x=float(speed), y=0.0, z=0.0),
            angular=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0))
        msg = t["nav_msgs/msg/Odometry"](
            header=self._header(stamp_ns, "odom"), child_frame_id="base_link",
            pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
            twist=t["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)))
        return self.store.serialize_cdr(msg, msg.__msgtype__)


_STORAGE = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


def write_traversal_bag(
    path: Path,
    traversal: Traversal,
    world: StreetWorld,
    storage: str = "sqlite3",
    compressed: bool = False,
    odometry: bool = True,
    progress: bool = True,
) -> Path:
    """Render `traversal` and write it as a rosbag2 directory at `path` (which must not exist)."""
    if storage not in _STORAGE:
        raise ValueError(f"storage {storage!r} is not supported; use one of {sorted(_STORAGE)}")
    messages = _BagMessages(compressed)
    duration_s = traversal.frames / CAMERA_HZ
    # GPS and odometry are stamped between camera frames, so poses must be interpolated.
    gps_t = np.arange(0.05, duration_s, 1 / GPS_HZ)
    odom_t = np.arange(0.03, duration_s, 1 / CAMERA_HZ)
    gps_xy, _ = traversal.drive.poses(gps_t)
    lat, lon = local_to_latlon(gps_xy)
    # Odometry comes from the wheels: a carried robot's odometry does not see the jump.
    odom_xy, odom_yaw = traversal.drive.poses(odom_t, odometry=True)
    odom_speed = np.gradient(traversal.drive.driven(odom_t), odom_t)
    camera_topic, camera_type = (
        (COMPRESSED_CAMERA_TOPIC, "sensor_msgs/msg/CompressedImage")
        if compressed
        else (CAMERA_TOPIC, "sensor_msgs/msg/Image")
    )
    events = [(int(s), 0, k) for k, s in enumerate(traversal.frame_stamps_ns())]
    events += [(traversal.epoch_ns + int(round(t * 1e9)), 1, k) for k, t in enumerate(gps_t)]
    if odometry:
        events += [(traversal.epoch_ns + int(round(t * 1e9)), 2, k) for k, t in enumerate(odom_t)]
    events.sort()
    poses = traversal.camera_poses()
    with Writer(path, version=9, storage_plugin=_STORAGE[storage]) as writer:
        conns = [
            writer.add_connection(camera_topic, camera_type, typestore=messages.store),
            writer.add_connection(
                GPS_TOPIC, "sensor_msgs/msg/NavSatFix", typestore=messages.store
            ),
        ]
        if odometry:
            conns.append(
                writer.add_connection(
                    ODOM_TOPIC, "nav_msgs/msg/Odometry", typestore=messages.store
                )
            )
        bar = tqdm(
            total=traversal.frames,
            desc=f"rendering {Path(path).name}",
            unit="frame",
            disable=not progress,
        )
        for stamp, kind, k in events:
            if kind == 0:
                data = messages.image(world.render(poses[k], traversal.appearance), stamp)
                bar.update()
            elif kind == 1:
                data = messages.fix(lat[k], lon[k], stamp)
            else:
                data = messages.odometry(
                    odom_xy[k], float(odom_yaw[k]), float(odom_speed[k]), stamp
                )
            writer.write(conns[kind], stamp, data)
        bar.close()
    return Path(path)


def write_demo_bags(
    out_dir: str | Path,
    frames: int = 400,
    seed: int = 0,
    storage: str = "sqlite3",
    compressed: bool = False,
    excursions: bool = False,
) -> tuple[Path, Path]:
    """
    Render the demo city twice and write `map` and `query` rosbag2 directories under `out_dir`.

    Existing bags there are left alone: remove them to regenerate. ``excursions``: see
    demo_traversals.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = StreetWorld(seed=seed)
    reference, query = demo_traversals(frames, excursions=excursions)
    paths = out_dir / "map", out_dir / "query"
    for path, traversal in zip(paths, (reference, query)):
        if path.exists():
            raise FileExistsError(f"{path} already exists; delete it to write the demo bags again")
        write_traversal_bag(path, traversal, world, storage, compressed)
    return paths
