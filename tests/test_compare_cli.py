"""`regner compare` end to end on the demo profile (shrunk to seconds): a comparison stopped by its budget,
then interrupted by SIGTERM mid-run, then finished, reusing every finished run and resuming the
interrupted one; its report's sentences are its numbers; a run trained in a worker is the run a fresh
`regner train` makes; bad input is one paragraph and exit code 2."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regner.experiments.compare.report import points

REPO = Path(__file__).resolve().parents[1]
SMALL = ["datasets.demo=['data=demo','data.train_size=240','data.dev_size=40','data.test_size=40']", "progress=false"]


def compare(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "regner.cli", "compare", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in (out / "runs").rglob("status.json"))


def test_a_budget_stopped_then_interrupted_comparison_finishes_reusing_every_run(tmp_path):
    out = tmp_path / "cmp"
    first = compare(f"out={out}", "budget.max_runs=4", *SMALL, cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs_used"] == 4 and summary["runs_used_by_stage"] == {"tune": 4, "compare": 0}
    assert {r["state"] for r in summary["rows"]} == {"exhausted"}  # the first look did not fit in the budget
    assert "stopped by its budget: a larger budget continues it" in (out / "report.md").read_text()
    assert "4 run(s) used (4 trained now, 0 from the cache)" in first.stderr

    # continued without a limit, and interrupted (SIGTERM) once a comparison run is half-way
    process = subprocess.Popen([sys.executable, "-m", "regner.cli", "compare", f"out={out}", *SMALL], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "runs" / "compare").glob("*/seed-*/history.jsonl")):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "rerun the same command to continue" in stderr
    assert "of the interrupted round's" in stderr  # the summary line counts them too, not only "N run(s) used"
    assert "of the interrupted round's" in (out / "report.md").read_text()  # its finished runs are counted
    interrupted = [d for d in run_dirs(out) if json.loads((d / "status.json").read_text())["status"] != "completed"]

    third = compare(f"out={out}", *SMALL, cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs_used"] == len(run_dirs(out))  # no run was trained twice, none overwritten
    assert all((d / "identity.sha256").is_file() for d in run_dirs(out))
    assert f"({summary['trained']} trained now, {summary['runs_used'] - summary['trained']} from the cache)" in third.stderr
    assert summary["runs_used"] - summary["trained"] >= 4
    log = (out / "train.log").read_text()
    for directory in interrupted:  # resumed from its saved state, or (killed before it saved any) started over
        assert f"resume={directory}" in log or log.count(f"hydra.run.dir={directory}") == 2
    assert {r["state"] for r in summary["rows"]} <= {"better", "worse", "equivalent", "futile", "exhausted", "unstable"}
    report = (out / "report.md").read_text()
    assert "(finished)" in report
    assert "| demo | tiny | rdrop | alpha=" in report and "**chosen** (best mean dev F1" in report  # the racing
    for row in summary["rows"]:  # every verdict sentence carries the row's own numbers
        assert row["sentence"] in report and points(row["delta"]) in row["sentence"]
        assert f"{row['seeds']} seeds" in row["sentence"] or row["state"] == "unstable"

    # a dry run reads the cache: every run of the first round is there
    plan = compare(f"out={out}", *SMALL, "dry_run=true", cwd=tmp_path).stdout
    assert "first round: 2 run(s), 2 of them in the cache" in plan

    # a run trained by a worker is the run a fresh `regner train` makes, loss for loss
    worker_run = next(d for d in run_dirs(out) if d not in interrupted)
    command = shlex.split([line for line in log.splitlines() if f"hydra.run.dir={worker_run}" in line][0])[3:]
    fresh = tmp_path / "fresh"
    command = [a for a in command if not a.startswith("hydra.run.dir=")] + [f"hydra.run.dir={fresh}"]
    subprocess.run([sys.executable, "-m", "regner.cli", "train", *command], cwd=tmp_path, check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (fresh / "history.jsonl").read_text().count('"loss"') > 0
    losses = [[json.loads(line)["train"] for line in (d / "history.jsonl").read_text().splitlines()]
              for d in (worker_run, fresh)]
    assert losses[0] == losses[1]


def in_process(*args: str, capsys) -> tuple[int, str]:
    """``regner compare ARGS`` in this process (no interpreter start): its exit code and stderr."""
    from regner.cli import main

    with pytest.raises(SystemExit) as end:
        main(["compare", *args])
    return end.value.code, capsys.readouterr().err


def test_another_comparison_in_the_same_directory_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cmp"
    code, _ = in_process(f"out={out}", "train=false", *SMALL, capsys=capsys)  # cache only: claims, trains nothing
    assert code == 0 and (out / "comparison.yaml").is_file() and "would have been needed" in (out / "report.md").read_text()
    assert "(cache only (train=false): it stops where the cache ends" in (out / "report.md").read_text()
    assert "stopped by its budget" not in (out / "report.md").read_text()  # no budget stopped it
    code, stderr = in_process(f"out={out}", "train=false", "target_mde=0.05", *SMALL, capsys=capsys)
    assert code == 2 and "holds another comparison (changed: target_mde)" in stderr
    assert stderr.count("\n") == 1  # one paragraph
    assert in_process(f"out={out}", "train=false", "budget.max_runs=3", *SMALL, capsys=capsys)[0] == 0  # a budget may change
    # so may the futility rule (non-binding: it only stops methods); the directory then holds the new design
    code, stderr = in_process(f"out={out}", "train=false", "futility_from=4", *SMALL, capsys=capsys)
    assert code == 0 and "futility_from: 2 → 4" in stderr and "futility_from: 4" in (out / "comparison.yaml").read_text()
    assert in_process(f"out={out}", "train=false", "futility_from=4", "contrasts={x: [rdrop, none]}", *SMALL,
                      capsys=capsys)[0] == 0  # contrasts only read the runs


@pytest.mark.parametrize("args, message", [(["compare=nope"], "compare"), (["looks=[3,2]"], "looks:"),
                                           (["seeds=[1,2,101]", "tune.seeds=[101,102]"], "seeds:"),
                                           (["budget.max_run=3"], "budget.max_run"),
                                           (["cache=[/no/such/dir]"], "cache: /no/such/dir does not exist"),
                                           (["compare=cpu", "encoder_dir=/no/encoder"], "encoder_dir: /no/encoder")])
def test_bad_input_is_one_paragraph_and_exit_code_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    code, stderr = in_process(f"out={tmp_path / 'cmp'}", *args, capsys=capsys)
    assert code == 2, stderr
    assert message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "cmp").exists()  # nothing written


def test_the_ledger_states_when_the_first_invocation_started(tmp_path, monkeypatch):
    from regner.experiments.benchmark import execution

    clock = [1_000_000.0]
    monkeypatch.setattr(execution.time, "time", lambda: clock[0])
    first = execution.Ledger(tmp_path)
    clock[0] += 3600
    first.close(False)
    clock[0] += 600
    second = execution.Ledger(tmp_path)
    clock[0] += 1800
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(1_000_000.0))
    assert second.summary() == f"1.50 h of wall time in 2 invocation(s) (first started {started})"
    second.close(True)
    assert execution.Ledger(tmp_path).summary(include_now=False).endswith(f"(first started {started})")
    # invocations started within one second (cache-only ones take less) are two entries, not one
    for _ in range(2):
        execution.Ledger(tmp_path).close(True)
    assert len(json.loads((tmp_path / "timing.json").read_text())["invocations"]) == 4


def test_a_new_directory_continues_the_ledger_of_the_comparison_its_cache_committed(tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.chdir(tmp_path)
    first = tmp_path / "first"
    assert in_process(f"out={first}", "train=false", *SMALL, capsys=capsys)[0] == 0
    committed = tmp_path / "committed"  # what scripts/archive_comparison.py commits beside the runs
    committed.mkdir()
    shutil.copy(first / "comparison.yaml", committed)
    entry = {"started": "2026-01-01T00:00:00+0000", "seconds": 7200.0, "finished": False, "machine": "m"}
    (committed / "timing.json").write_text(json.dumps({"invocations": [entry]}))

    # a clone's fresh directory: the committed 2 h count, so a 1 h budget trains nothing
    clone = tmp_path / "clone"
    code, stderr = in_process(f"out={clone}", f"cache=[{committed}]", "budget.max_hours=1", *SMALL, capsys=capsys)
    assert code == 0, stderr
    assert f"continuing the comparison committed in {committed}: its 1 invocation(s), 2.00 h" in stderr
    assert "0 run(s) used (0 trained now" in stderr and not (clone / "runs").exists()
    report = (clone / "report.md").read_text()
    assert "2.00 h of wall time in 2 invocation(s) (first started 2026-01-01T00:00:00+0000)" in report
    assert "stopped by its budget" in report and "the time budget (1 h) ends before this step" in report
    ledger = json.loads((clone / "timing.json").read_text())["invocations"]
    assert len(ledger) == 2 and ledger[0] == entry

    # from then on the directory keeps its own ledger: a rerun does not take the committed one again
    assert in_process(f"out={clone}", "train=false", f"cache=[{committed}]", *SMALL, capsys=capsys)[0] == 0
    assert [i["seconds"] for i in json.loads((clone / "timing.json").read_text())["invocations"]][0] == 7200.0
    assert len(json.loads((clone / "timing.json").read_text())["invocations"]) == 3
    # another design is another comparison: a budget of its own
    other = tmp_path / "other"
    code, stderr = in_process(f"out={other}", "train=false", "target_mde=0.05", f"cache=[{committed}]", *SMALL,
                              capsys=capsys)
    assert code == 0 and "continuing" not in stderr
    assert len(json.loads((other / "timing.json").read_text())["invocations"]) == 1
    # a damaged committed ledger is one paragraph, exit 2, before anything is written
    (committed / "timing.json").write_text("{")
    code, stderr = in_process(f"out={tmp_path / 'third'}", "train=false", f"cache=[{committed}]", *SMALL,
                              capsys=capsys)
    assert code == 2 and f"cache: {committed / 'timing.json'}: not valid JSON" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "third").exists()
