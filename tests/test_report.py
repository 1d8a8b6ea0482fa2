import json
import math
import subprocess
import sys

import pytest

from regner.experiments.report import build_report
from regner.experiments.report.grouping import group_runs
from regner.experiments.report.records import collect_runs
from regner.experiments.report.summary import summarize
from regner.experiments.report.tables import markdown_report


def fake_run(root, sweep, job, regularizer, f1, seed, steps_per_s=10.0, kl=None, knobs=None, status="completed",
             test_f1=None, diverged=False, dataset="cluener", trainer=None):
    """A finished run's files as regner writes them; ``trainer`` adds a config.yaml with those keys."""
    run_dir = root / sweep / str(job)
    run_dir.mkdir(parents=True)
    run = {"dataset": dataset, "encoder": "tiny", "regularizer": regularizer, "kl": kl,
           "regularizer_config": knobs or {}, "seed": seed}
    if trainer is not None:
        config = {"seed": seed, "data": {"name": dataset}, "encoder": {"name": "tiny"},
                  "regularizer": {"name": regularizer, **(knobs or {})}, "kl": {"name": kl or "globalpointer"},
                  "trainer": {"lr": 0.001, "precision": "fp32", "progress": seed % 2 == 0, **trainer}}
        (run_dir / "config.yaml").write_text(json.dumps(config))
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
    # the sweep ends by saying how its jobs ended, which was best, and how to aggregate them
    sweep_dir = jobs[0].parent.parent
    assert f"regner sweep: 2 job(s) in {sweep_dir.resolve()}: 2 completed" in result.stderr, result.stderr[-2000:]
    best = max(jobs, key=lambda p: json.loads(p.read_text())["dev"]["f1"])
    assert f"best dev F1 {json.loads(best.read_text())['dev']['f1']:.4f}: job " in result.stderr
    assert f"aggregate them: regner report {sweep_dir.resolve()}" in result.stderr
    report = subprocess.run([sys.executable, "-m", "regner.cli", "report", "--no-plots", str(tmp_path / "outputs")],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert f"wrote {tmp_path / 'outputs' / 'report.md'}, {tmp_path / 'outputs' / 'report.csv'}" in report.stderr
    table = [line for line in report.stdout.splitlines() if line.startswith("| rdrop")]
    # alpha multiplies R-Drop's default weight (100); rows sort numerically
    assert len(table) == 2 and "| alpha=100 |" in table[0] and "| alpha=400 |" in table[1]


def test_runs_differing_only_in_an_unused_key_are_replicates(tmp_path):
    for job, alpha in enumerate([1.0, 4.0]):
        run_dir = fake_run(tmp_path, "s", job, "none", 0.9, 42)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics["run"]["alpha"] = alpha
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    rows = summarize(group_runs(collect_runs([tmp_path])))
    assert [(r["strength"], r["n"], r["runs"]) for r in rows] == [("default", 1, 2)]


def test_none_runs_of_one_setting_form_one_baseline(tmp_path):
    for job, (alpha, f1) in enumerate([(1.0, 0.60), (1.0, 0.62), (4.0, 0.64), (4.0, 0.62)]):
        run_dir = fake_run(tmp_path, "s", job, "none", f1, job)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics["run"]["alpha"] = alpha
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    for job, f1 in enumerate([0.70, 0.71, 0.72], start=4):
        fake_run(tmp_path, "s", job, "rdrop", f1, job, kl="globalpointer", knobs={"alpha": 1.0})
    rows = summarize(group_runs(collect_runs([tmp_path])))
    assert [r["verdict"] for r in rows if r["regularizer"] == "none"] == ["baseline"]
    (rdrop,) = [r for r in rows if r["regularizer"] == "rdrop"]
    assert rdrop["delta_vs_none"] == pytest.approx(0.71 - 0.62) and rdrop["verdict"] == "better"
    assert rdrop["test"].startswith("Welch")  # no shared seeds


def test_groups_split_by_every_differing_key_and_compare_within_their_setting(tmp_path):
    """fp32 and bf16 runs (or two learning rates) are never pooled, and each regularizer row is
    compared with the `none` runs of its own setting, its cost too."""
    for job, seed in enumerate([1, 2, 3]):
        fake_run(tmp_path, "s", job, "none", 0.60 + seed / 100, seed, steps_per_s=10.0, trainer={})
        fake_run(tmp_path, "s", 10 + job, "none", 0.80 + seed / 100, seed, steps_per_s=20.0, trainer={"precision": "bf16"})
        fake_run(tmp_path, "s", 20 + job, "rdrop", 0.62 + seed / 100, seed, steps_per_s=5.0, kl="globalpointer",
                 knobs={"alpha": 1.0}, trainer={})
        fake_run(tmp_path, "s", 30 + job, "rdrop", 0.78 + seed / 100, seed, steps_per_s=10.0, kl="globalpointer",
                 knobs={"alpha": 1.0}, trainer={"precision": "bf16"})
    rows = summarize(group_runs(collect_runs([tmp_path])))
    assert len(rows) == 4 and all(r["n"] == 3 for r in rows)
    fp32, bf16 = ([r for r in rows if r["regularizer"] == "rdrop" and precision in r["setting"]]
                  for precision in ("precision=fp32", "precision=bf16"))
    assert fp32[0]["delta_vs_none"] == pytest.approx(0.02) and fp32[0]["verdict"] == "better"
    assert bf16[0]["delta_vs_none"] == pytest.approx(-0.02) and bf16[0]["verdict"] == "worse"
    assert fp32[0]["cost_ratio"] == pytest.approx(2.0) and bf16[0]["cost_ratio"] == pytest.approx(2.0)
    assert "progress" not in fp32[0]["setting"]  # keys that cannot change a result never split groups


def test_paired_by_seed_and_judged_on_test(tmp_path):
    """Shared seeds → paired test; a constant +0.01 on test F1 under a large seed effect is real."""
    for seed, base in ((1, 0.50), (2, 0.60), (3, 0.70)):
        fake_run(tmp_path, "s", seed, "none", 0.9, seed, test_f1=base)
        fake_run(tmp_path, "s", 10 + seed, "fgm", 0.9, seed, test_f1=base + 0.01)
    (fgm,) = [r for r in summarize(group_runs(collect_runs([tmp_path]))) if r["regularizer"] == "fgm"]
    assert fgm["judged_on"] == "test" and fgm["test"].startswith("paired")
    assert fgm["delta_vs_none"] == pytest.approx(0.01) and fgm["verdict"] == "better"


def test_noise_is_not_a_difference_and_zero_spread_is_not_noise(tmp_path):
    for seed, (a, b) in enumerate([(0.60, 0.62), (0.64, 0.61), (0.62, 0.64)]):
        fake_run(tmp_path, "s", seed, "none", a, seed)
        fake_run(tmp_path, "s", 10 + seed, "noise", b, seed)
    (noise,) = [r for r in summarize(group_runs(collect_runs([tmp_path]))) if r["regularizer"] == "noise"]
    assert noise["verdict"] == "within noise"
    for seed in range(2):
        fake_run(tmp_path, "t", seed, "none", 0.60, seed, dataset="weibo")
        fake_run(tmp_path, "t", 10 + seed, "noise", 0.61, seed, dataset="weibo")
    (flat,) = [r for r in summarize(group_runs(collect_runs([tmp_path / "t"]))) if r["regularizer"] == "noise"]
    assert flat["verdict"] == "better"


def test_a_group_with_a_collapsed_seed_is_unstable_and_shows_its_all_seed_mean(sweep):
    rows = summarize(group_runs(collect_runs([sweep])))
    weak = rows_by(rows, "rdrop", "alpha=1")
    assert weak["verdict"] == "unstable (1 of 3 collapsed)"
    assert weak["f1_all_seeds_mean"] == pytest.approx((0.61 + 0.65 + 0.01) / 3)
    # the reading names the row once, with the count, without repeating the verdict word
    reading = markdown_report(rows, collect_runs([sweep]))
    assert "Unstable: rdrop/globalpointer/alpha=1 (1 of 3 collapsed), vat/softmax/default (1 of 1 collapsed)." in reading
    assert "(unstable (" not in reading


def test_evaluate_outputs_are_skipped(sweep):
    evaluation = sweep / "evaluate" / "x"
    evaluation.mkdir(parents=True)
    (evaluation / "status.json").write_text(json.dumps({"status": "completed"}))
    (evaluation / "metrics.json").write_text(json.dumps({"dev": {"f1": 0.5}, "run": {"ckpt": "somewhere"}}))
    assert len(collect_runs([sweep])) == 10


def test_a_row_is_judged_on_dev_everywhere_when_its_baseline_has_no_test(tmp_path):
    """Δ and the all-seed mean must be on the same split: dev, when the none runs lack test F1."""
    for seed in (1, 2):
        fake_run(tmp_path, "s", seed, "none", 0.60 + seed / 100, seed)
        fake_run(tmp_path, "s", 10 + seed, "fgm", 0.70 + seed / 100, seed, test_f1=0.10)
    (fgm,) = [r for r in summarize(group_runs(collect_runs([tmp_path]))) if r["regularizer"] == "fgm"]
    assert fgm["judged_on"] == "dev" and fgm["delta_vs_none"] == pytest.approx(0.10)
    assert fgm["f1_all_seeds_mean"] == pytest.approx(0.715)


def report_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "regner.cli", "report", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("damage,reason", [
    (lambda d: (d / "metrics.json").write_text('{"run": {"regularizer"'), "metrics.json: not valid JSON"),
    (lambda d: (d / "status.json").write_text(""), "status.json: empty"),
    (lambda d: (d / "metrics.json").write_text("[1, 2]"), "metrics.json: a JSON list, not an object"),
    (lambda d: (d / "metrics.json").write_text(json.dumps(
        {**json.loads((d / "metrics.json").read_text()), "dev": {"f1": "0.9"}})), "dev.f1 is '0.9', not an F1 score"),
    (lambda d: (d / "metrics.json").write_text(json.dumps(
        {**json.loads((d / "metrics.json").read_text()), "dev": {"f1": float("nan")}})), "dev.f1 is nan"),
    (lambda d: (d / "status.json").write_bytes(b"\xff\xfe"), "status.json: cannot be read"),
])
def test_an_unreadable_run_is_skipped_and_named_and_the_rest_reported(sweep, tmp_path, damage, reason):
    """One damaged run never costs the report (it aborted with a traceback naming no file); NaN F1 is
    unreadable, not collapsed."""
    victim = sweep / "s1" / "0"  # a none run: the others still make the report
    damage(victim)
    out = tmp_path / "out"
    result = report_cli(sweep, "-o", out, "--no-plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"skipped {victim}" in result.stderr and reason in result.stderr and "Traceback" not in result.stderr
    text = (out / "report.md").read_text()
    assert "## Unreadable runs (skipped)" in text and reason.split(": ", 1)[-1] in text
    assert rows_by(summarize(group_runs(collect_runs([sweep], unreadable=[]))), "none")["n"] == 2
    assert f"wrote {out / 'report.md'}" in result.stderr


def test_report_refuses_files_and_never_counts_a_run_twice(sweep, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    for args, says in (([afile], "is a file"), ([sweep, "-o", afile], "is an existing file"),
                       ([tmp_path / "missing"], "no such directory")):
        result = report_cli(*args, cwd=tmp_path)
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert afile.read_text() == "x"
    once = collect_runs([sweep])
    assert len(collect_runs([sweep, sweep, sweep / "s1"])) == len(once) == 10


def test_an_empty_directory_writes_no_report(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = report_cli(empty, cwd=tmp_path)
    assert result.returncode == 1 and "nothing written" in result.stderr
    assert list(empty.iterdir()) == []
