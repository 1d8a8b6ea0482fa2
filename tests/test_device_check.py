"""The device check cannot rot: scripts/device_check.sh runs on the CPU at small shapes, and the wheel list
of `make gpu-wheels` holds every package the GPU path needs that the GPU machine lacks."""

import json
import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
GPU_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}


def wheel_list() -> tuple[set[str], dict[str, str]]:
    """(preinstalled names, {listed name: version}) of scripts/gpu-wheels.txt."""
    preinstalled, listed = set(), {}
    for line in (REPO / "scripts" / "gpu-wheels.txt").read_text().splitlines():
        if line.startswith("# preinstalled:"):
            preinstalled |= {canonicalize_name(n) for n in line.split(":", 1)[1].split()}
        elif line.strip() and not line.startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            listed[canonicalize_name(name)] = version
    return preinstalled, listed


def needs(requirements: list[str]) -> set[str]:
    """The names of ``requirements`` that apply on the GPU machine's Python (no extras)."""
    found = set()
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(GPU_PYTHON):
            found.add(canonicalize_name(requirement.name))
    return found


def test_the_gpu_wheels_cover_pyproject_and_every_listed_package_s_needs():
    preinstalled, listed = wheel_list()
    available = preinstalled | set(listed)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    gpu_path = needs(project["dependencies"]) | needs(project["optional-dependencies"]["serve"])
    assert gpu_path - available == set(), "pyproject needs these on the GPU machine: add them to scripts/gpu-wheels.txt"
    assert not preinstalled & set(listed), "a package is both preinstalled and listed"
    for name in listed:
        try:
            own = needs(requires(name) or [])
        except PackageNotFoundError:
            pytest.fail(f"{name} of scripts/gpu-wheels.txt is not installed here, so its needs cannot be checked")
        assert own - available == set(), f"{name} needs {sorted(own - available)} on the GPU machine"


def test_make_gpu_wheels_fetches_exactly_the_list_for_python_3_12():
    makefile = (REPO / "Makefile").read_text()
    target = makefile[makefile.index("gpu-wheels:"):makefile.index("device-check:")]
    assert "scripts/gpu-wheels.txt" in target and "--python-version 3.12" in target and "--only-binary=:all:" in target
    assert ".whl/" in (REPO / ".gitignore").read_text().split()


def test_the_device_check_runs_on_the_cpu_at_small_shapes(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", "scripts/device_check.sh", str(out), "--cpu"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "cpu" and [s["step"] for s in summary["steps"]] == ["cuda tests", "throughput",
                                                                                "memory", "compare"]
    assert all(s["status"] == "ok" for s in summary["steps"])
    tests = summary["steps"][0]["tests"]
    assert tests["passed"] == tests["failed"] == 0 and tests["skipped"] >= 25
    assert {row["regularizer"] for row in summary["steps"][1]["rows"]} == {"none", "rdrop", "vat"}
    assert "| 2 × 32 | rdrop |" in (out / "memory.md").read_text()
    assert "at most 8 runs" in (out / "device_check.log").read_text()  # the smoke comparison's plan
    # what the device tool can bring back: at most 8 files, plainly named, none nested
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files)
    assert all((out / name).is_file() for name in files)


def test_the_device_check_refuses_gpu_mode_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    result = subprocess.run([sys.executable, "scripts/device_check.py", str(tmp_path / "x")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no CUDA device here: give --cpu" in result.stderr
    assert not (tmp_path / "x").exists()


def test_the_gpu_profile_validates_and_plans_its_hour_without_a_gpu(tmp_path):
    from transformers import BertConfig

    if not (REPO.parent / "shared" / "data" / "msra").is_dir():
        pytest.skip("the shared datasets (../shared/data) are not here")

    encoder = tmp_path / "bert-base"  # a BERT-base-shaped directory: the plan reads its config, no weights
    BertConfig(vocab_size=21128).save_pretrained(encoder)
    result = subprocess.run([sys.executable, "-m", "regner.cli", "compare", "compare=gpu", f"encoder_dir={encoder}",
                             "dry_run=true", f"out={tmp_path / 'plan'}"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout
    assert "datasets: weibo, cluener, msra" in plan and "at most 180 runs" in plan and "budget: no run limit, 1 h" in plan
    assert "the first look (2 seeds) ≈ 45 min" in plan and "budget 1 h: the first look fits" in plan
    assert not (tmp_path / "plan").exists()  # a plan claims no directory
