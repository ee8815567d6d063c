"""config/localize.yaml, the node's declared parameters and the launch file agree."""

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _node_parameters() -> dict:
    # Read PARAMETERS from the node's source so this test runs without rclpy too.
    tree = ast.parse((REPO / "vpr_ros/ros/node.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PARAMETERS":
            return ast.literal_eval(node.value)
    raise AssertionError("PARAMETERS not found in vpr_ros/ros/node.py")


def test_yaml_lists_every_parameter_with_its_default():
    params = yaml.safe_load((REPO / "config/localize.yaml").read_text())["vpr_localizer"]["ros__parameters"]
    declared = _node_parameters()
    assert set(params) == set(declared)
    for name, (default, description) in declared.items():
        assert params[name] == default, name
        assert type(params[name]) is type(default), name  # ROS parameter types are strict
        assert description


def test_yaml_documents_every_parameter_with_a_comment():
    lines = (REPO / "config/localize.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("    ") and not line.strip().startswith("#") and ":" in line:
            assert lines[i - 1].strip().startswith("#"), f"no comment above {line.strip()}"


def test_launch_file_compiles_and_declares_the_documented_arguments():
    source = (REPO / "launch/localize.launch.py").read_text()
    compile(source, "localize.launch.py", "exec")
    for arg in ("map", "model", "weights", "params_file", "image"):
        assert re.search(rf'DeclareLaunchArgument\(\s*"{arg}"', source), arg


def test_launch_file_starts_the_node_with_its_arguments():
    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; this runs on a machine with a ROS 2 install")
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node
    import importlib.util

    spec = importlib.util.spec_from_file_location("localize_launch", REPO / "launch/localize.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    args = {e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    assert args == {"map", "model", "weights", "params_file", "image"}
    nodes = [e for e in ld.entities if isinstance(e, Node)]
    assert len(nodes) == 1 and nodes[0].node_executable == "localize"
