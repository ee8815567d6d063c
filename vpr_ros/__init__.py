"""vpr_ros: onboard visual place recognition for ROS 2."""

__version__ = "0.1.0"
