"""Shared fixtures: the real datasets next to the repository, and the test markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_MARKERS = {
    "data": "needs the real datasets in ../shared/data (or $LEUKEMIA_SHARED_DATA)",
    "slow": "takes more than a few seconds",
    "browser": "drives the app in a real browser",
}


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml registers these too; add only the ones it does not, to avoid duplicates.
    known = {line.split(":")[0].strip() for line in config.getini("markers")}
    for name, help_text in _MARKERS.items():
        if name not in known:
            config.addinivalue_line("markers", f"{name}: {help_text}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder (see its README.md); skips the test where it is absent."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = Path(os.environ.get("LEUKEMIA_SHARED_DATA", default))
    if not path.is_dir():
        pytest.skip(
            f"needs ../shared/data (real datasets); absent in a fresh clone (looked in {path})"
        )
    return path
