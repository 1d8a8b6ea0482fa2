import json
import math
import subprocess
import sys

import pytest

from regner.report import build_report, collect_runs, compare, group_runs, summarize


def fake_run(root, sweep, job, regularizer, f1, seed, steps_per_s=10.0, kl=None, knobs=None, status="completed",
             test_f1=None, diverged=False, dataset="cluener"):
    run_dir = root / sweep / str(job)
    run_dir.mkdir(parents=True)
    run = {"dataset": dataset, "encoder": "tiny", "regularizer": regularizer, "kl": kl,
           "regularizer_config": knobs or {}, "seed": seed}
    if status == "completed":
        metrics = {"run": run, "dev": {"f1": f1}, "test": {"f1": test_f1} if test_f1 is not None else None,
                   "train": {"steps_per_s": steps_per_s, "peak_memory_mb": 100.0 + job, "device": "cuda:0"}}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        (run_dir / "status.json").write_text(json.dumps({"status": "completed", "run": run}))
    else:
        (run_dir / "status.json").write_text(json.dumps({"status": "failed", "run": run, "diverged": diverged,
                                                         "reason": "TrainingDiverged: non-finite loss" if diverged else "boom"}))
    return run_dir


@pytest.fixture
def sweep(tmp_path):
    for i, (f1, seed) in enumerate([(0.60, 1), (0.62, 2), (0.64, 3)]):
        fake_run(tmp_path, "s1", i, "none", f1, seed, steps_per_s=10.0, test_f1=f1 - 0.1)
    for i, (f1, seed) in enumerate([(0.70, 1), (0.71, 2), (0.72, 3)], start=3):
        fake_run(tmp_path, "s1", i, "rdrop", f1, seed, steps_per_s=5.0, kl="globalpointer", knobs={"alpha": 4.0})
    for i, (f1, seed) in enumerate([(0.61, 1), (0.65, 2), (0.01, 3)], start=6):  # seed 3 collapsed
        fake_run(tmp_path, "s1", i, "rdrop", f1, seed, steps_per_s=4.0, kl="globalpointer", knobs={"alpha": 1.0})
    fake_run(tmp_path, "s1", 9, "vat", 0, 1, kl="softmax", status="failed", diverged=True)
    return tmp_path


def rows_by(rows, regularizer, strength="default"):
    (row,) = [r for r in rows if r["regularizer"] == regularizer and r["strength"] == strength]
    return row


def test_mean_std_n_and_best(sweep):
    rows = summarize(group_runs(collect_runs([sweep])))
    none = rows_by(rows, "none")
    assert none["n"] == 3 and none["dev_f1_mean"] == pytest.approx(0.62) and none["dev_f1_std"] == pytest.approx(0.02)
    assert none["dev_f1_best"] == pytest.approx(0.64) and none["test_f1_mean"] == pytest.approx(0.52)
    assert none["verdict"] == "baseline" and none["cost_ratio"] == pytest.approx(1.0)


def test_collapsed_runs_are_flagged_not_averaged(sweep):
    rows = summarize(group_runs(collect_runs([sweep])))
    weak = rows_by(rows, "rdrop", "alpha=1")
    assert weak["n"] == 2 and weak["collapsed"] == 1
    assert weak["dev_f1_mean"] == pytest.approx(0.63)
    vat = rows_by(rows, "vat")
    assert vat["n"] == 0 and vat["collapsed"] == 1 and math.isnan(vat["dev_f1_mean"])


def test_cost_ratio_relative_to_none_of_the_same_sweep(sweep, tmp_path):
    fake_run(tmp_path, "s2", 0, "rdrop", 0.7, 1, steps_per_s=1.0, kl="globalpointer", knobs={"alpha": 4.0})
    records = collect_runs([sweep])
    strong = [r for r in records if r.regularizer == "rdrop" and r.knobs["alpha"] == 4.0]
    assert [round(r.cost_ratio, 6) for r in strong if r.sweep.name == "s1"] == [2.0, 2.0, 2.0]
    assert all(math.isnan(r.cost_ratio) for r in strong if r.sweep.name == "s2")  # no none in that sweep


def test_verdicts():
    assert compare([0.70, 0.71, 0.72], [0.60, 0.62, 0.64])[1] == "better"
    assert compare([0.61, 0.65], [0.60, 0.62, 0.64])[1] == "within noise"
    assert compare([0.5], [0.6, 0.61])[1] == "n<2: cannot tell"
    delta, verdict = compare([0.50, 0.51, 0.52], [0.60, 0.62, 0.64])
    assert verdict == "worse" and delta == pytest.approx(-0.11)


def test_report_files_and_markdown(sweep, tmp_path):
    out = tmp_path / "report"
    text, rows = build_report([sweep], out, title="t")
    assert {p.name for p in out.iterdir()} == {"report.md", "report.csv", "f1_by_regularizer.png",
                                               "f1_vs_strength.png", "cost_vs_gain.png"}
    assert "| rdrop | globalpointer | alpha=4 | 3 | 0.7100 ± 0.0100 |" in text
    assert "better" in text and "## Collapsed or failed runs" in text and "non-finite loss" in text
    assert len((out / "report.csv").read_text().splitlines()) == 1 + len(rows)


@pytest.mark.parametrize("extra", [[], ["-m"]])
def test_two_job_sweep_then_report(tmp_path, extra):
    args = [sys.executable, "-m", "regner.cli", "sweep", *extra, "alpha=1,4", "regularizer=rdrop",
            "data.train_size=100", "data.dev_size=30", "data.test_size=0", "trainer.max_epochs=1",
            "trainer.progress=false", "encoder.hidden_size=32", "encoder.num_layers=1", "encoder.intermediate_size=64"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted(tmp_path.glob("outputs/multirun/*/*/*/metrics.json"))
    assert len(jobs) == 2
    assert [json.loads(p.read_text())["run"]["alpha"] for p in jobs] == [1.0, 4.0]
    report = subprocess.run([sys.executable, "-m", "regner.cli", "report", "--no-plots", str(tmp_path / "outputs")],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    table = [line for line in report.stdout.splitlines() if line.startswith("| rdrop")]
    assert len(table) == 2 and "alpha=1" in table[0] and "alpha=4" in table[1]


def test_alpha_sweep_of_a_regularizer_that_ignores_it_keeps_one_row_per_value(tmp_path):
    for job, alpha in enumerate([1.0, 4.0]):
        run_dir = fake_run(tmp_path, "s", job, "none", 0.9, 42)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics["run"]["alpha"] = alpha
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    rows = summarize(group_runs(collect_runs([tmp_path])))
    assert [r["strength"] for r in rows] == ["alpha=1 (unused)", "alpha=4 (unused)"]
    assert [r["n"] for r in rows] == [1, 1]


def test_several_none_groups_form_one_pooled_baseline(tmp_path):
    for job, (alpha, f1) in enumerate([(1.0, 0.60), (1.0, 0.62), (4.0, 0.64), (4.0, 0.62)]):
        run_dir = fake_run(tmp_path, "s", job, "none", f1, job)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics["run"]["alpha"] = alpha
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    for job, f1 in enumerate([0.70, 0.71, 0.72], start=4):
        fake_run(tmp_path, "s", job, "rdrop", f1, job, kl="globalpointer", knobs={"alpha": 1.0})
    rows = summarize(group_runs(collect_runs([tmp_path])))
    assert [r["verdict"] for r in rows if r["regularizer"] == "none"] == ["baseline", "baseline"]
    (rdrop,) = [r for r in rows if r["regularizer"] == "rdrop"]
    assert rdrop["delta_vs_none"] == pytest.approx(0.71 - 0.62) and rdrop["verdict"] == "better"
