"""The installed package holds what runs on the robot: none of it imports the harness."""

import ast

from conftest import REPO

# The harness beside the package (tools/), the tests' and the benchmarks' own modules.
OUTSIDE = {"vpr_harness", "conftest", "rosutil", "common", "report"}


def _imported(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_no_module_of_the_package_imports_the_harness():
    modules = sorted((REPO / "vpr_ros").rglob("*.py"))
    assert len(modules) > 50
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in modules
        for name in _imported(path)
        if name.split(".")[0] in OUTSIDE
    ]
    assert not offenders
