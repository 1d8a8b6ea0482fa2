"""A non-editable install must ship every config file (regner.cli.config_dir falls back to regner/conf)."""

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

REPO = Path(__file__).resolve().parents[1]


def test_every_config_file_is_package_data():
    """Each config group is a data-only package (setuptools warns about, and may drop, data in unlisted dirs)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["regner.conf"] == "conf"
    packages, data = set(setuptools["packages"]), setuptools["package-data"]
    missing = []
    for path in sorted((REPO / "conf").rglob("*.yaml")):
        package = ".".join(("regner", "conf", *path.parent.relative_to(REPO / "conf").parts))
        patterns = data.get(package, []) + data.get("*", [])
        if package not in packages or not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns):
            missing.append(str(path.relative_to(REPO)))
    assert not missing, f"not shipped by a non-editable install: {missing}"
    # and no listed package that does not exist (a renamed group would leave a stale entry)
    stale = [p for p in packages if p.startswith("regner.conf")
             and not (REPO / "conf").joinpath(*p.split(".")[2:]).is_dir()]
    assert not stale, stale


def test_every_python_package_is_listed():
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "regner").rglob("__init__.py")}
    assert found <= set(packages), sorted(found - set(packages))
