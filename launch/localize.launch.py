"""Start the vpr_localizer node: `ros2 launch vpr_ros localize.launch.py map:=/path/to/map`."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument(
            "map", default_value="", description="Map directory written by `vpr-ros build-map`."
        ),
        DeclareLaunchArgument(
            "model", default_value="baseline", description="Descriptor model (the map's model)."
        ),
        DeclareLaunchArgument(
            "weights", default_value="", description="Checkpoint for DINOv2-based models."
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution(
                [FindPackageShare("vpr_ros"), "config", "localize.yaml"]
            ),
            description="Node parameters (YAML).",
        ),
        DeclareLaunchArgument(
            "image", default_value="/camera/image_raw", description="Camera image topic."
        ),
        DeclareLaunchArgument(
            "odom",
            default_value="",
            description="nav_msgs/Odometry topic for the temporal filter (empty: a speed prior).",
        ),
    ]
    node = Node(
        package="vpr_ros",
        executable="localize",
        name="vpr_localizer",
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {"map_path": LaunchConfiguration("map"), "model": LaunchConfiguration("model"),
             "weights": LaunchConfiguration("weights"), "odom_topic": LaunchConfiguration("odom")},
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
        ],
    )
    return LaunchDescription([*args, node])
