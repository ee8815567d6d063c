"""The ament pep257 (docstring style) lint test of an ament_python package."""

from ament_pep257.main import main
import pytest

from conftest import LINT_EXCLUDES, REPO


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257(monkeypatch):
    # ament_pep257 lints the paths given relative to the working directory: the package root.
    monkeypatch.chdir(REPO)
    rc = main(argv=[".", "test", "--exclude", *LINT_EXCLUDES])
    assert rc == 0, "Found code style errors / warnings"
