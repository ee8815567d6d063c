"""
Start the vpr_localizer node: `ros2 launch vpr_ros localize.launch.py map:=/path/to/map`.

An argument left empty keeps the value of params_file (config/localize.yaml by default); one set
on the command line overrides it. The node is managed (lifecycle) and, with autostart true in the
parameters (the default), configures and activates itself.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# launch argument -> node parameter, applied only when the argument is not empty
OVERRIDES = {
    "map": "map_path",
    "model": "model",
    "weights": "weights",
    "odom": "odom_topic",
    "image_transport": "image_transport",
    "autostart": "autostart",
}


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    overrides = {OVERRIDES[name]: v for name, v in value.items() if v != ""}
    if "autostart" in overrides:
        overrides["autostart"] = overrides["autostart"].lower() == "true"
    image = LaunchConfiguration("image").perform(context)
    profile = LaunchConfiguration("dds_profile").perform(context)
    return [
        Node(
            package="vpr_ros",
            executable="localize",
            name="vpr_localizer",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[LaunchConfiguration("params_file"), *([overrides] if overrides else [])],
            remappings=[("image", image), ("image/compressed", image + "/compressed")],
            additional_env={"FASTDDS_DEFAULT_PROFILES_FILE": profile} if profile else None,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    config = PathJoinSubstitution([FindPackageShare("vpr_ros"), "config"])
    args = [
        DeclareLaunchArgument(
            "map", default_value="",
            description="Map directory written by `vpr-ros build-map` (empty: params_file's).",
        ),
        DeclareLaunchArgument(
            "model", default_value="",
            description="Descriptor model, the map's (empty: params_file's, default baseline).",
        ),
        DeclareLaunchArgument(
            "weights", default_value="",
            description="Checkpoint for DINOv2-based models (empty: params_file's).",
        ),
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([config, "localize.yaml"]),
            description="Node parameters (YAML).",
        ),
        DeclareLaunchArgument(
            "image", default_value="/camera/image_raw",
            description="Camera image topic; with image_transport compressed the node subscribes"
            " <image>/compressed.",
        ),
        DeclareLaunchArgument(
            "image_transport", default_value="",
            description="raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage);"
            " empty: params_file's (default raw).",
        ),
        DeclareLaunchArgument(
            "odom", default_value="",
            description="nav_msgs/Odometry topic for the temporal filter (empty: params_file's,"
            " default none: a speed prior).",
        ),
        DeclareLaunchArgument(
            "autostart", default_value="",
            description="true: configure and activate at start; false: wait for a lifecycle"
            " manager. Empty: params_file's (default true).",
        ),
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="Namespace of the node and its topics (vpr/match -> /<ns>/vpr/match).",
        ),
        DeclareLaunchArgument(
            "dds_profile", default_value=PathJoinSubstitution([config, "fastdds_robot.xml"]),
            description="Fast DDS profile for the node (rmw_fastrtps_cpp): the shipped robot"
            " profile sizes shared memory for raw camera frames and keeps UDP to the network;"
            " empty: the environment's FASTDDS_DEFAULT_PROFILES_FILE, if any.",
        ),
    ]
    return LaunchDescription([*args, OpaqueFunction(function=_node)])
