"""config/localize.yaml, the node's declared parameters and the launch file agree."""

import json
import re
from pathlib import Path

import pytest
import yaml

from vpr_ros import parameters

REPO = Path(__file__).resolve().parents[1]


def test_yaml_is_generated_from_the_parameter_table():
    # One source: vpr_ros/parameters.py. Regenerate with: python -m vpr_ros.parameters >
    # config/localize.yaml
    assert (REPO / "config/localize.yaml").read_text() == parameters.render_yaml()


def test_yaml_lists_every_parameter_with_its_default_and_a_comment():
    text = (REPO / "config/localize.yaml").read_text()
    params = yaml.safe_load(text)[parameters.NODE_NAME]["ros__parameters"]
    assert params == parameters.defaults()
    # ROS types are strict
    assert all(type(params[p.name]) is type(p.default) for p in parameters.PARAMETERS)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("    ") and not line.strip().startswith("#"):
            assert lines[i - 1].strip().startswith("#"), f"no comment above {line.strip()}"


@pytest.mark.parametrize(("name", "value", "says"), [
    ("model", "nope", "model must be one of baseline"),
    ("top_k", "abc", "top_k must be an integer"),
    ("top_k", 0, "top_k must be in [1, 100]"),
    ("map_path", 123, "map_path must be a string"),
    ("verify_map", "maybe", "verify_map must be a bool"),
    ("diagnostics_period_s", -1.0, "diagnostics_period_s must be in [0.1, 3600]"),
    ("diagnostics_period_s", 0.0, "diagnostics_period_s must be in [0.1, 3600]"),
    ("min_confidence", 2.0, "min_confidence must be in [0, 1]"),
    ("sequence_length", -3, "sequence_length must be in [1, 1000]"),
    ("temporal", "kalman", "temporal must be one of none, hmm, seqslam"),
    ("rerank", "sift", "rerank must be one of none, auto, fol, xfeat"),
    ("ambiguity_radius_m", float("nan"), "ambiguity_radius_m must be a finite number"),
    ("base_sigma_m", -1.0, "base_sigma_m must be in [0.01, unbounded]"),
    ("log_throttle_s", -5.0, "log_throttle_s must be in [0, unbounded]"),
    ("backend", "cuda", "backend must be one of auto, torch, torch-compile"),
])
def test_bad_parameter_values_are_named_with_what_is_allowed(name, value, says):
    found = parameters.problems({**parameters.defaults(), name: value})
    assert len(found) == 1 and found[0].startswith(says), found


def test_defaults_are_valid_and_velocity_order_is_checked():
    assert parameters.problems(parameters.defaults()) == []
    bad = {**parameters.defaults(), "sequence_min_velocity": 2.0, "sequence_max_velocity": 1.0}
    assert parameters.problems(bad) == [
        "sequence_min_velocity (2.0) must not exceed sequence_max_velocity (1.0)"
    ]
    # an int for a double is fine
    assert parameters.problems({**parameters.defaults(), "base_sigma_m": 5}) == []


def test_commands_run_the_nodes_pipeline_and_can_set_every_option_of_it():
    from vpr_ros.cli import build_parser, main
    from vpr_ros.errors import ConfigError
    from vpr_ros.localizer import LocalizerConfig

    node = LocalizerConfig.from_parameters(parameters.defaults())
    assert LocalizerConfig() == node
    query = ["--map", "m", "--images", "i"]
    args = build_parser().parse_args(["localize", *query])
    assert LocalizerConfig.from_parameters(vars(args)) == node
    every = ["--top-k", "7", "--rerank", "none", "--rerank-top-k", "3", "--temporal", "seqslam",
             "--min-confidence", "0.5", "--ambiguity-radius-m", "9", "--base-sigma-m", "2",
             "--sequence-length", "4", "--sequence-min-velocity", "0.5",
             "--sequence-max-velocity", "2"]
    parsed = vars(build_parser().parse_args(["eval", *query, *every]))
    assert (parsed["rerank"], parsed["temporal"]) == (["none"], ["seqslam"])  # eval takes several
    config = LocalizerConfig.from_parameters(parsed | {"rerank": "none", "temporal": "seqslam"})
    assert (config.top_k, config.rerank_top_k, config.min_confidence, config.sequence.length,
            config.sequence.max_velocity) == (7, 3, 0.5, 4, 2.0)
    # the table's ranges, named by the flag or the option
    with pytest.raises(SystemExit):
        main(["localize", *query, "--top-k", "0"])
    with pytest.raises(ConfigError, match=r"top_k must be in \[1, 100\], got 0"):
        LocalizerConfig(top_k=0)


LAUNCH_ARGS = ("map", "model", "weights", "params_file", "image", "image_transport", "odom",
               "autostart", "namespace", "dds_profile")


def test_launch_file_compiles_and_declares_the_documented_arguments():
    source = (REPO / "launch/localize.launch.py").read_text()
    compile(source, "localize.launch.py", "exec")
    for arg in LAUNCH_ARGS:
        assert re.search(rf'DeclareLaunchArgument\(\s*"{arg}"', source), arg


def test_launch_file_starts_the_node_and_leaves_empty_arguments_to_the_params_file():
    pytest.importorskip(
        "launch_ros",
        reason="launch_ros is not on PyPI; this runs on a machine with a ROS 2 install",
    )
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "localize_launch", REPO / "launch/localize.launch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    args = {e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    assert args == set(LAUNCH_ARGS)
    context = LaunchContext()
    context.launch_configurations.update({name: "" for name in LAUNCH_ARGS})
    context.launch_configurations.update(
        {"map": "/maps/a", "params_file": "/p.yaml", "image": "/cam", "autostart": "false"}
    )
    (opaque,) = [e for e in ld.entities if isinstance(e, OpaqueFunction)]
    (node,) = opaque.execute(context)
    assert isinstance(node, Node) and node.node_executable == "localize"


def test_rviz_and_foxglove_show_the_topics_the_node_publishes():
    published = {"/vpr/map_places", "/vpr/candidates", "/vpr/markers", "/vpr/pose_prior"}
    rviz = yaml.safe_load((REPO / "config/vpr.rviz").read_text())["Visualization Manager"]
    assert rviz["Global Options"]["Fixed Frame"] == "map"
    topics = {d["Topic"]["Value"]: d["Topic"] for d in rviz["Displays"] if "Topic" in d}
    assert set(topics) == published
    # the map's places are published once: only a transient-local subscription gets them
    assert topics["/vpr/map_places"]["Durability Policy"] == "Transient Local"
    layout = json.loads((REPO / "config/vpr.foxglove.json").read_text())
    panels = layout["configById"]
    assert set(panels["3D!vprmap"]["topics"]) == published
    assert {p["value"].split(".")[0] for p in panels["Plot!vprconf"]["paths"]} == {"/vpr/match"}
