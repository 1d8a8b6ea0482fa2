"""A non-editable install must ship every config file (regner.cli.config_dir falls back to regner/conf)."""

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

REPO = Path(__file__).resolve().parents[1]


def _matches(relative: Path, pattern: str) -> bool:
    """setuptools' package-data glob: one '*' per path component, no crossing of '/'."""
    parts = pattern.split("/")
    return len(parts) == len(relative.parts) and all(fnmatch.fnmatch(p, q) for p, q in zip(relative.parts, parts))


def test_every_config_file_is_package_data():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert "regner.conf" in setuptools["packages"] and setuptools["package-dir"]["regner.conf"] == "conf"
    patterns = setuptools["package-data"]["regner.conf"]
    missing = [str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")
               if not any(_matches(p.relative_to(REPO / "conf"), pattern) for pattern in patterns)]
    assert not missing, f"not shipped by a non-editable install: {missing}"


def test_every_python_package_is_listed():
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "regner").rglob("__init__.py")}
    assert found <= set(packages), sorted(found - set(packages))
