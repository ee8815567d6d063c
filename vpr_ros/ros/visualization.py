"""
What RViz and Foxglove show (config/vpr.rviz, config/vpr.foxglove.json), in the map frame.

- ``vpr/map_places`` (visualization_msgs/MarkerArray, transient local): the map's places as one
  point list, once per loaded map, thinned to at most ``viz_max_places`` points.
- ``vpr/candidates`` (geometry_msgs/PoseArray): each frame's candidates that have a position.
- ``vpr/markers`` (visualization_msgs/MarkerArray): the best place, coloured from red (confidence
  0) to green (1), and the pose prior's 95 % xy covariance ellipse while a prior is published.

The per-frame topics are built only while someone subscribes to them.
"""

from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseArray
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from vpr_ros.localizer import Match
from vpr_ros.maps.mapdir import VprMap

# chi-square quantile of 2 degrees of freedom at 95 %: the ellipse holding 95 % of the prior
CHI2_2D_95 = 5.991
BEST, PRIOR = 0, 1  # marker ids in vpr/markers


class Visualization:
    def __init__(self, node: LifecycleNode) -> None:
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.node = node
        self.places_pub = node.create_lifecycle_publisher(MarkerArray, "vpr/map_places", latched)
        self.candidates_pub = node.create_lifecycle_publisher(PoseArray, "vpr/candidates", 10)
        self.markers_pub = node.create_lifecycle_publisher(MarkerArray, "vpr/markers", 10)

    def destroy(self) -> None:
        for pub in (self.places_pub, self.candidates_pub, self.markers_pub):
            self.node.destroy_lifecycle_publisher(pub)

    def publish_map(self, vpr_map: VprMap, map_frame: str, max_places: int) -> None:
        """Replace the shown map by ``vpr_map``'s places (none without positions)."""
        header = Header(frame_id=map_frame, stamp=self.node.get_clock().now().to_msg())
        xyz = vpr_map.places.positions()
        xyz = xyz[~np.isnan(xyz[:, 0])]
        stride = max(1, math.ceil(len(xyz) / max_places)) if max_places else 0
        markers = [Marker(header=header, ns="places", action=Marker.DELETEALL)]
        if stride and len(xyz):
            points = Marker(header=header, ns="places", id=0, type=Marker.POINTS,
                            action=Marker.ADD, color=ColorRGBA(r=0.6, g=0.6, b=0.6, a=1.0))
            points.scale.x = points.scale.y = 1.0
            points.pose.orientation.w = 1.0
            points.points = [Point(x=x, y=y, z=z) for x, y, z in xyz[::stride].tolist()]
            points.text = f"{vpr_map.map_id}: {len(points.points)} of {len(vpr_map)} places"
            markers.append(points)
        self.places_pub.publish(MarkerArray(markers=markers))

    def publish_match(self, match: Match, header: Header) -> None:
        """Show one frame's candidates and best place; ``header``: map frame, image stamp."""
        located = [c for c in match.candidates if c.position is not None]
        if self.candidates_pub.get_subscription_count():
            self.candidates_pub.publish(
                PoseArray(header=header, poses=[_pose(c.position, c.orientation) for c in located])
            )
        if not self.markers_pub.get_subscription_count():
            return
        markers = []
        if located and located[0] is match.best:
            best = Marker(header=header, ns="best", id=BEST, type=Marker.SPHERE,
                          action=Marker.ADD, pose=_pose(match.best.position, None))
            best.scale.x = best.scale.y = best.scale.z = 3.0
            c = min(max(match.confidence, 0.0), 1.0)
            best.color = ColorRGBA(r=1.0 - c, g=c, b=0.0, a=0.9)
            markers.append(best)
        else:
            markers.append(Marker(header=header, ns="best", id=BEST, action=Marker.DELETE))
        if match.pose_prior is not None and match.covariance_xy is not None:
            markers.append(_ellipse(header, match.pose_prior.position, match.covariance_xy))
        else:
            markers.append(Marker(header=header, ns="prior", id=PRIOR, action=Marker.DELETE))
        self.markers_pub.publish(MarkerArray(markers=markers))


def _pose(position, orientation) -> Pose:
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
    o = orientation or (0.0, 0.0, 0.0, 1.0)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (
        float(v) for v in o
    )
    return pose


def _ellipse(header: Header, position, covariance_xy) -> Marker:
    """Return a flat cylinder covering the 95 % region of the xy covariance around ``position``."""
    values, vectors = np.linalg.eigh(np.asarray(covariance_xy, dtype=np.float64))
    yaw = math.atan2(vectors[1, 1], vectors[0, 1])  # the major axis (largest eigenvalue)
    marker = Marker(header=header, ns="prior", id=PRIOR, type=Marker.CYLINDER, action=Marker.ADD,
                    pose=_pose(position, (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))),
                    color=ColorRGBA(r=0.2, g=0.4, b=1.0, a=0.35))
    major, minor = (2 * math.sqrt(CHI2_2D_95 * max(v, 0.0)) for v in values[::-1])
    marker.scale.x, marker.scale.y, marker.scale.z = major, minor, 0.2
    return marker
