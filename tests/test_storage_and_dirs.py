"""Where a run writes: a directory that cannot be one is refused before Hydra touches it; a full disk
ends the run failed with one paragraph, and the state it saved before resumes exactly."""

import errno
import json
import os

import pytest

from regner.errors import ConfigError, RunDirError
from regner.runs.io import StorageError
from regner.training.run import run_training

from .test_cli import regner
from .test_resume import SETTINGS, comparable
from .test_training import compose_config


def test_a_full_disk_ends_the_run_failed_and_the_saved_state_resumes(tmp_path, monkeypatch):
    import regner.training.trainer as trainer_module

    cfg = compose_config(*SETTINGS)
    reference = run_training(cfg, tmp_path / "reference")
    original, calls = trainer_module.atomic_target, {"n": 0}

    def full_disk(path):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 1's state was saved; the disk is full when epoch 2's is
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path)

    monkeypatch.setattr(trainer_module, "atomic_target", full_disk)
    run_dir = tmp_path / "full"
    with pytest.raises(StorageError) as err:
        run_training(cfg, run_dir)
    message = str(err.value)
    assert "No space left on device" in message and f"regner train resume={run_dir.resolve()}" in message
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["storage"] and not (run_dir / "metrics.json").exists()
    monkeypatch.setattr(trainer_module, "atomic_target", original)  # space freed
    resumed = run_training(cfg, run_dir, resume=True)
    assert comparable(resumed) == comparable(reference)


def test_the_cli_reports_a_full_disk_in_one_paragraph(tmp_path):
    """Through the CLI: a sitecustomize makes every atomic write fail with ENOSPC once training runs."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno, regner.runs.io as io\n"
        "def full(path):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
        "import regner.training.trainer as t\n"
        "t.atomic_target = full\n")
    from .test_cli import TINY, cli_env

    env = cli_env()
    env["PYTHONPATH"] = f"{hook}{os.pathsep}{env.get('PYTHONPATH', '')}"
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "regner.cli", "train", *TINY, "hydra.run.dir=run"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert "regner train resume=" in result.stderr
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("seed", ["4294967296", "1180591620717411303424"])
def test_a_seed_numpy_cannot_take_is_refused(seed):
    from regner.config.validation import validate_config

    with pytest.raises(ConfigError, match=r"seed=\d+ is not valid: expected an integer in \[0, 4294967295\]"):
        validate_config(compose_config(f"seed={seed}"))


def test_a_run_directory_that_is_a_file_or_under_one_is_refused(tmp_path):
    (tmp_path / "afile").write_text("mine")
    for arg, says in (("hydra.run.dir=afile", "afile is a file"), ("hydra.run.dir=afile/run", "afile is a file")):
        result = regner("train", arg, cwd=tmp_path)
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, result.stderr
    result = regner("sweep", "hydra.sweep.dir=afile", cwd=tmp_path)
    assert result.returncode == 2 and "hydra.sweep.dir=afile cannot be a run directory" in result.stderr
    assert (tmp_path / "afile").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_an_unwritable_parent_is_refused(tmp_path, monkeypatch):
    from regner.runs.directory import check_creatable

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # what a read-only directory answers
    with pytest.raises(RunDirError, match="is not writable by this user"):
        check_creatable(tmp_path / "new" / "run")


def test_a_symlink_loop_as_data_path_is_one_paragraph(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    result = regner("train", "data=jsonl", f"data.train={tmp_path / 'a'}", "trainer.progress=false", cwd=tmp_path)
    assert result.returncode == 2 and str(tmp_path / "a") in result.stderr and "Traceback" not in result.stderr
