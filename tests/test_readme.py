"""The README's first screen is a promise: its "Quick start" block runs, line by line, on a fresh
directory (with two epochs where a line trains), without an error or a collapsed run, and every line
ends by naming what it wrote. Its config-group table lists every option under conf/."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def quick_start_lines() -> list[str]:
    section = README.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def without_comment(line: str) -> str:
    """The command of a README line: a ``#`` outside quotes starts a comment."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    return shlex.join(list(lexer)).replace("'|'", "|")


def as_test_command(line: str, out: Path, dry_run: bool) -> str:
    """The README line as the test runs it: ``regner`` through this interpreter, two epochs for a
    training line that sets none, no progress bars; ``regner compare`` as a dry run in the fast suite."""
    command = without_comment(line)
    parts = []
    for piece in command.split(" | "):
        if piece.startswith("regner "):
            words = shlex.split(piece)
            if words[1] in ("train", "sweep"):
                words += [] if any(w.startswith("trainer.max_epochs=") for w in words) else ["trainer.max_epochs=2"]
                words += ["trainer.progress=false"]
            if words[1] == "compare":
                words += ["progress=false", *(["dry_run=true"] if dry_run else [])]
            piece = shlex.join([sys.executable, "-m", "regner", *words[1:]])
        parts.append(piece)
    return " | ".join(parts)


def test_the_quick_start_block_is_what_the_readme_says():
    lines = quick_start_lines()
    commands = [without_comment(line).split()[:2] for line in lines]
    assert ["regner", "train"] in commands and ["regner", "sweep"] in commands and ["regner", "report"] in commands
    assert ["regner", "compare"] in commands
    for line in lines:  # a sweep example varies something its regularizer reads (no identical jobs)
        if " sweep " in f" {line} ":
            assert re.search(r"regularizer=\w+,|alpha=[\d.]+,|seed=\d+,", line), line


def test_the_makefile_benchmark_target_is_regner_compare():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "\t.venv/bin/regner compare compare=$(PROFILE) $(if $(ENCODER),encoder_dir=$(ENCODER))" in makefile


def check_outputs(line: str, result: subprocess.CompletedProcess, cwd: Path, dry_run: bool) -> None:
    command = without_comment(line)
    assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if command.startswith("regner train"):
        run_dir = cwd / re.search(r"hydra.run.dir=(\S+)", command).group(1)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["dev"]["f1"] >= 0.05, f"{command}: collapsed (dev F1 {metrics['dev']['f1']})"
        assert metrics["run"]["kl"] == "globalpointer"  # R-Drop used the KL: metrics say which
        assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
        assert f"metrics (with the per-type tables): {(run_dir / 'metrics.json').resolve()}" in result.stderr
    elif command.startswith("regner sweep"):
        sweep_dir = (cwd / re.search(r"hydra.sweep.dir=(\S+)", command).group(1)).resolve()
        jobs = sorted(sweep_dir.glob("*/metrics.json"))
        assert jobs, result.stderr[-2000:]
        for job in jobs:
            f1 = json.loads(job.read_text())["dev"]["f1"]
            assert f1 >= 0.05, f"{command}: job {job.parent.name} collapsed (dev F1 {f1})"
        assert f"regner sweep: {len(jobs)} job(s) in {sweep_dir}: {len(jobs)} completed\n" in result.stderr
        assert f"aggregate them: regner report {sweep_dir}" in result.stderr and "collapsed" not in result.stderr
    elif command.startswith("regner report"):
        out = (cwd / command.split()[2]).resolve()
        assert (out / "report.md").is_file() and f"wrote {out / 'report.md'}" in result.stderr
        assert "f1_by_regularizer.png" in result.stderr and "f1_vs_strength.png" in result.stderr
    elif command.startswith("regner evaluate"):
        assert "metrics written to" in result.stderr
    elif "regner predict" in command:
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(records) == 1 and records[0]["entities"], result.stdout
        assert "regner predict: 1 texts" in result.stderr and "written to stdout" in result.stderr
    elif command.startswith("regner compare") and dry_run:
        assert "profile demo:" in result.stdout and "first round:" in result.stdout
    elif command.startswith("regner compare"):
        out = (cwd / re.search(r"out=(\S+)", command).group(1)).resolve()
        assert f"report: {out / 'report.md'}" in result.stderr, result.stderr[-2000:]


def run_quick_start(tmp_path: Path, dry_run: bool) -> None:
    for line in quick_start_lines():
        command = as_test_command(line, tmp_path, dry_run)
        result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
        check_outputs(line, result, tmp_path, dry_run)


def test_every_quick_start_line_runs_and_names_its_outputs(tmp_path):
    run_quick_start(tmp_path, dry_run=True)


@pytest.mark.slow
def test_the_quick_start_with_the_whole_demo_comparison(tmp_path):
    run_quick_start(tmp_path, dry_run=False)
    assert (tmp_path / "outputs" / "quickstart" / "compare" / "summary.json").is_file()


def test_the_config_group_table_lists_every_option():
    table = README.split("\n## Config groups\n", 1)[1].split("\n### ", 1)[0]
    for group in ("data", "encoder", "head", "regularizer", "kl"):
        row = next(line for line in table.splitlines() if line.startswith(f"| `{group}` |"))
        listed = set(re.findall(r"`([\w-]+)`", row.split("|")[2]))
        options = {p.stem for p in (REPO / "conf" / group).glob("*.yaml")}
        assert options <= listed, f"README's {group} row misses {sorted(options - listed)}"
