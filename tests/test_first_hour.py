"""A new user's first hour: fast `--version`, a `usage:` line, summaries at the end of long commands,
the demo benchmark without pretraining and its dry-run estimate, the ramp-up key checked early."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from regner.cli.sweep import sweep_summary
from regner.experiments.benchmark.estimate import estimate_text
from regner.experiments.benchmark.profile import (
    ProfileError,
    load_profile,
    profile_path,
    profile_spec,
    reproduce_command,
)

REPO = Path(__file__).resolve().parents[1]


def test_version_imports_neither_torch_nor_transformers():
    code = ("import sys; from regner.cli import main; main(['--version']); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    version, imported = result.stdout.splitlines()
    assert version.startswith("regner ") and "torch " in version and "transformers " in version
    assert imported == "[]"


def test_help_starts_with_a_usage_line_and_promises_exit_code_2():
    result = subprocess.run([sys.executable, "-m", "regner", "--help"], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("usage: regner COMMAND")
    assert "exit code 2" in result.stdout
    wrong = subprocess.run([sys.executable, "-m", "regner", "train", "regularizer=doesnotexist"], capture_output=True,
                           text=True, timeout=120)
    assert wrong.returncode == 2  # what the help promises, for Hydra's own errors too


def test_sweep_summary_names_the_best_the_collapsed_the_failed_and_the_report_command():
    jobs = [{"sweep_dir": "/s", "run_dir": "/s/0", "job": 0, "overrides": ["alpha=1"], "status": "completed",
             "dev_f1": 0.9},
            {"sweep_dir": "/s", "run_dir": "/s/1", "job": 1, "overrides": ["alpha=16"], "status": "completed",
             "dev_f1": 0.0},
            {"sweep_dir": "/s", "run_dir": "/s/2", "job": 2, "overrides": ["alpha=64"], "status": "failed",
             "dev_f1": None}]
    text = sweep_summary(jobs)
    assert text.splitlines()[0] == ("regner sweep: 3 job(s) in /s: 2 completed, 1 failed; 1 collapsed "
                                    "(dev F1 < 0.05): jobs 1")
    assert "best dev F1 0.9000: job 0 (alpha=1) in /s/0" in text
    assert "job 2 failed: see /s/2/regner.log" in text and text.endswith("aggregate them: regner report /s")


def test_demo_profile_needs_no_encoder_and_refuses_one():
    profile = load_profile(profile_path("demo"))
    assert profile.encoder is None and all("{encoder}" not in " ".join(o) for o in profile.regimes.values())
    with pytest.raises(ProfileError, match="use no pretrained encoder"):
        load_profile(profile_path("demo"), encoder="/models/bert")


def test_reproduce_line_names_the_encoder_that_was_given():
    assert reproduce_command(load_profile(profile_path("cpu"))) == "make benchmark-v2"
    given = load_profile(profile_path("gpu"), encoder="/models/bert-base-chinese")
    assert reproduce_command(given) == "make benchmark-v2 PROFILE=gpu ENCODER=/models/bert-base-chinese"


def test_dry_run_estimate_comes_from_measured_runs(tmp_path):
    profile = load_profile(profile_path("demo"))
    spec = profile_spec(profile_path("demo"))
    out = tmp_path / "bench"
    assert "no measured cost yet" in estimate_text(out, profile, spec, references=tmp_path / "none")
    # a committed benchmark of the same profile: 3 finished runs in 90 s of wall time -> 30 s per run
    reference = tmp_path / "refs" / "2026-01-01-demo"
    from regner.experiments.benchmark.profile import tune_jobs
    from regner.experiments.benchmark.runs import run_dir

    for job in tune_jobs(profile, "demo")[:3]:
        directory = run_dir(reference, job, profile.tune_seeds[0])
        directory.mkdir(parents=True)
        (directory / "status.json").write_text(json.dumps({"status": "completed"}))
        (directory / "metrics.json").write_text(json.dumps({"dev": {"f1": 0.5}}))
    (reference / "timing.json").write_text(json.dumps({"invocations": [{"seconds": 90.0, "machine": "CPU, 2 cores"}]}))
    import yaml

    (reference / "profile.yaml").write_text(yaml.safe_dump({"profile": spec, "encoder": "None"}))
    text = estimate_text(out, profile, spec, references=tmp_path / "refs")
    assert text.startswith("11 runs planned; estimated 5.5 min for the 11 left, at 30 s of wall time per run as "
                           f"measured over 3 runs of the committed benchmark {reference}"), text
    (reference / "profile.yaml").write_text(yaml.safe_dump({"profile": {**spec, "jobs": 7}, "encoder": "None"}))
    assert "no measured cost yet" in estimate_text(out, profile, spec, references=tmp_path / "refs")


def test_dry_run_checks_the_encoder(tmp_path):
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "--profile", "gpu", "--encoder",
                             str(tmp_path / "missing"), "--dry-run", "--out", str(tmp_path / "b")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "runs planned" in result.stdout
    assert f"encoder: {tmp_path / 'missing'} (missing)" in result.stdout
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_negative_rampup_is_refused_before_training(tmp_path):
    result = subprocess.run([sys.executable, "-m", "regner", "train", "regularizer=rdrop",
                             "regularizer.rampup_steps=-1", f"hydra.run.dir={tmp_path / 'run'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "regularizer.rampup_steps" in result.stderr and "Traceback" not in result.stderr
