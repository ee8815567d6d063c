"""
The package as a ROS 2 user gets it.

Built with colcon into a workspace, with what `ros2 launch` needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COLCON = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which("colcon")


@pytest.mark.slow
@pytest.mark.skipif(
    COLCON is None,
    reason="colcon is not installed (pip install colcon-core colcon-ros colcon-python-setup-py)",
)
def test_colcon_build_installs_launch_config_index_entry_and_a_working_executable(tmp_path):
    build = subprocess.run(
        [
            COLCON,
            "--log-base",
            str(tmp_path / "log"),
            "build",
            "--base-paths",
            str(REPO),
            "--build-base",
            str(tmp_path / "build"),
            "--install-base",
            str(tmp_path / "install"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    prefix = tmp_path / "install" / "vpr_ros"
    assert (prefix / "share/vpr_ros/launch/localize.launch.py").is_file()
    assert (prefix / "share/vpr_ros/config/localize.yaml").read_text() == (
        REPO / "config/localize.yaml"
    ).read_text()
    assert (prefix / "share/ament_index/resource_index/packages/vpr_ros").is_file()
    assert (prefix / "share/vpr_ros/package.xml").is_file()
    executable = prefix / "lib/vpr_ros/localize"
    assert os.access(executable, os.X_OK)
    site = next((prefix / "lib").glob("python3*/site-packages"))
    # the test, demo and benchmark harness (tools/) stays out of what a robot installs
    assert not (site / "vpr_ros" / "replay").exists() and not list(site.glob("vpr_harness*"))
    env = {**os.environ, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": str(prefix)}
    code = (
        "import runpy, sys, vpr_ros; print(vpr_ros.__file__); sys.argv = [sys.argv[1], '--help'];"
        " runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code, str(executable)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    # the installed copy answered, not the source tree
    assert ran.stdout.splitlines()[0].startswith(str(site))
    assert "usage: localize" in ran.stdout and "map_path (string" in ran.stdout
