"""The ament flake8 lint test of an ament_python package (ament's default configuration)."""

from ament_flake8.main import main_with_errors
import pytest

from conftest import LINT_EXCLUDES, REPO


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8(monkeypatch):
    # ament_flake8 lints the working directory: the package root, wherever pytest started.
    monkeypatch.chdir(REPO)
    rc, errors = main_with_errors(argv=["--exclude", *LINT_EXCLUDES])
    assert rc == 0, \
        "Found %d code style errors / warnings:\n" % len(errors) + \
        "\n".join(errors)
