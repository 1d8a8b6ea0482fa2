"""The helper scripts run (CI-sized) and print what they promise."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~50 s: a measurement script
def test_bench_throughput_prints_a_row_per_regularizer():
    result = subprocess.run([sys.executable, "scripts/bench_throughput.py", "--encoder", "small", "--batch-sizes", "4",
                             "--steps", "1", "--warmup", "0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 4 |")]
    assert [row.split("|")[2].strip() for row in rows] == ["none", "rdrop", "fgm", "gp", "vat", "noise", "pgd", "awp",
                                                            "rdrop_fgm", "none+ema", "fgm+ema"]
    assert rows[0].split("|")[5].strip() == "1.00×"


def test_benchmark_dry_run_lists_the_tune_sweep_of_each_dataset(tmp_path):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text("{}")  # the dry run checks that the encoder exists, and reads nothing
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "--profile", "cpu", "--dry-run", "--out",
                             str(tmp_path / "bench"), "--encoder", str(encoder)], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"encoder: {encoder} (found)" in result.stdout and "runs planned" in result.stdout
    sweeps = [line for line in result.stdout.splitlines() if line.startswith("regner sweep")]
    assert len(sweeps) == 2 and all("hydra/launcher=joblib" in s and "seed=101" in s for s in sweeps)
    assert "weibo.pretrained.rdrop_softmax.3" in sweeps[0] and "cluener.pretrained.ema.0.99" in sweeps[1]
    assert "then stage 2: 24 presets × seeds [1, 2, 3, 4, 5]" in result.stdout  # 12 methods × 2 regimes
    assert not (tmp_path / "bench").exists()


def check_defaults_module():
    """scripts/check_defaults.py imported as a module (scripts/ is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_defaults", REPO / "scripts" / "check_defaults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_defaults_flags_a_default_that_collapses(tmp_path):
    """A regularizer far below `none` (or diverged, or missing) fails the defaults check."""
    from .test_report import fake_run

    module = check_defaults_module()
    scores = {"none": 0.60, "rdrop": 0.58, "vat": 0.20, "fgm": 0.61, "gp": 0.59}
    label = "weibo (weiboNER_2nd_conll.train, weiboNER_2nd_conll.dev, weiboNER_2nd_conll.test)"  # as metrics name it
    for job, (regularizer, f1) in enumerate(scores.items()):  # laid out as run_dataset writes them
        fake_run(tmp_path, "weibo", job, regularizer, f1, 1, dataset=label).rename(tmp_path / "weibo" / regularizer)
    fake_run(tmp_path, "weibo", 9, "noise", 0, 1, dataset=label, status="failed", diverged=True).rename(
        tmp_path / "weibo" / "noise")
    table, problems = module.verdicts(tmp_path, ["weibo"], list(scores) + ["noise"])
    assert sorted(p.split(":")[0] for p in problems) == ["weibo/noise", "weibo/vat"]
    _, every = module.verdicts(tmp_path, ["weibo"])  # by default every regularizer: the ones not run are problems
    assert "weibo/pgd: not run" in every
    assert "| weibo | rdrop | 0.5800 |" in table and "0.97×" in table
    # --chosen: the strengths a comparison's racing chose, as method@value runs under out/chosen/<dataset>/
    for job, (label, f1) in enumerate({"rdrop@3": 0.55, "fgm@0.15": 0.10}.items(), start=20):
        fake_run(tmp_path / "chosen", "weibo", job, label.split("@")[0], f1, 1, dataset="weibo").rename(
            tmp_path / "chosen" / "weibo" / label)
    table, problems = module.verdicts(tmp_path, ["weibo"], list(scores) + ["noise"], ["rdrop@3", "fgm@0.15"])
    assert "| weibo | rdrop@3 | 0.5500 |" in table and "| weibo | rdrop | 0.5800 |" in table  # both, apart
    assert sorted(p.split(":")[0] for p in problems) == ["weibo/fgm@0.15", "weibo/noise", "weibo/vat"]
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"chosen": [
        {"method": "rdrop", "value": 3, "key": "alpha", "overrides": ["regularizer=rdrop", "kl=globalpointer"]},
        {"method": "ema", "value": 0.99, "key": "trainer.ema.decay", "overrides": ["regularizer=none"]},
        {"method": "fgm", "value": None, "key": "regularizer.epsilon", "overrides": ["regularizer=fgm"]}]}))
    assert module.chosen_settings(summary) == {"rdrop@3": ["regularizer=rdrop", "kl=globalpointer", "alpha=3"],
                                               "ema@0.99": ["regularizer=none", "trainer.ema.decay=0.99"]}


def test_check_defaults_continues_a_run_a_stopped_call_left_and_restarts_one_with_nothing_saved(tmp_path, monkeypatch):
    import fcntl
    from types import SimpleNamespace

    from regner.runs.directory import LAST_STATE, LOCK_FILE

    module = check_defaults_module()
    done, saved, bare = (tmp_path / "weibo" / r for r in ("none", "rdrop", "vat"))
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    (done / "status.json").write_text('{"status": "completed"}')
    diverged = tmp_path / "weibo" / "gp"  # finished too: its collapse is the table's verdict, not a run to repeat
    diverged.mkdir()
    (diverged / "status.json").write_text('{"status": "failed", "diverged": true}')
    (saved / LAST_STATE).parent.mkdir(parents=True)
    (saved / LAST_STATE).write_bytes(b"state")
    (saved / "status.json").write_text('{"status": "interrupted"}')
    (bare / "config.yaml").parent.mkdir(parents=True)
    (bare / "config.yaml").write_text("seed: 1\n")  # stopped before its first checkpoint
    busy = tmp_path / "weibo" / "fgm"  # another call is training it: neither resumed nor removed
    busy.mkdir()
    holder = open(busy / LOCK_FILE, "w")
    fcntl.flock(holder, fcntl.LOCK_EX)
    commands = []
    monkeypatch.setattr(module.subprocess, "run", lambda command, **kw: commands.append(command[3:]))
    args = SimpleNamespace(regularizers=["none", "rdrop", "vat", "fgm", "gp"], chosen={}, seed=1, max_epochs=2,
                           train_samples=10, eval_samples=10, overrides=[])
    try:
        module.run_dataset("weibo", tmp_path, args, threads=1)
    finally:
        holder.close()
    assert commands[0] == ["train", f"resume={saved}", "trainer.progress=false"]  # none: finished, not rerun
    assert commands[1][:2] == ["train", "data=weibo"] and f"hydra.run.dir={bare}" in commands[1]
    assert not bare.exists() and (saved / LAST_STATE).exists() and len(commands) == 2 and busy.is_dir()


def test_check_defaults_writes_a_table_whose_reproduce_line_is_the_call_that_made_it(tmp_path):
    """Runs already finished are reused (nothing trains here); defaults.md names the exact call, --chosen and all."""
    from .test_report import fake_run

    data = tmp_path / "data" / "weibo"
    data.mkdir(parents=True)
    (data / "weiboNER_2nd_conll.train").write_text("")
    out = tmp_path / "out"
    for job, (label, f1) in enumerate({"none": 0.60, "rdrop": 0.58, "chosen/rdrop@3.0": 0.57}.items()):
        home = out / label.rpartition("/")[0]
        fake_run(home, "weibo", job, label.split("/")[-1].split("@")[0], f1, 1).rename(
            home / "weibo" / label.split("/")[-1])
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"chosen": [{"method": "rdrop", "value": 3.0, "key": "alpha",
                                               "overrides": ["regularizer=rdrop"]}]}))
    call = ["--datasets", "weibo", "--regularizers", "rdrop", "--max-epochs", "3", "--out", str(out),
            "--chosen", str(summary)]
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "check_defaults.py"), *call],
                            capture_output=True, text=True, env={**os.environ,
                                                                 "REGNER_DATA": str(tmp_path / "data")})
    assert result.returncode == 0, result.stderr
    written = (out / "defaults.md").read_text(encoding="utf-8")
    assert f"Reproduce: `python scripts/check_defaults.py {' '.join(call)}`" in written
    assert "| weibo | rdrop@3.0 | 0.5700 |" in written and "≤ 3 epochs" in written


def test_archive_comparison_keeps_finished_runs_records_and_a_paired_table(tmp_path):
    import gzip

    out, dest = tmp_path / "compare", tmp_path / "archive"
    runs = {"d.pretrained.none/seed-1": (0.50, "completed"), "d.pretrained.none/seed-2": (0.40, "completed"),
            "d.pretrained.vat/seed-1": (0.53, "completed"), "d.pretrained.vat/seed-2": (0.39, "completed"),
            "d.pretrained.vat/seed-3": (0.45, "running"), "d.pretrained.rdrop.0.3/seed-101": (0.47, "completed"),
            "d.random.none/seed-1": (0.20, "completed"), "d.random.vat/seed-1": (0.26, "completed"),
            "d.pretrained.fgm/seed-1": (0.52, "completed"), "e.pretrained.vat/seed-1": (0.30, "completed")}
    for name, (f1, status) in runs.items():
        run = out / "runs" / name
        run.mkdir(parents=True)
        (run / "status.json").write_text(json.dumps({"status": status}))
        if status == "completed":
            (run / "metrics.json").write_text(json.dumps({
                "dev": {"f1": f1 + 0.01}, "test": {"f1": f1}, "epochs": 5, "best_epoch": 4,
                "train": {"wall_time_s": 90.0}}))
        (run / "config.yaml").write_text("seed: 1\n")
    (out / "comparison.yaml").write_text("design: {}\n")
    (out / "timing.json").write_text('{"invocations": []}\n')
    result = subprocess.run([sys.executable, "scripts/archive_comparison.py", str(out), str(dest)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "9 finished run(s)" in result.stdout  # the running seed-3 is left out
    assert sorted(p.name for p in dest.iterdir()) == ["comparison.yaml", "runs.jsonl.gz", "runs.md", "timing.json"]
    with gzip.open(dest / "runs.jsonl.gz", "rt", encoding="utf-8") as handle:
        assert len(handle.readlines()) == 9
    table = (dest / "runs.md").read_text().splitlines()
    vat = next(line for line in table if "| d | pretrained | vat |" in line)
    # paired Δ on seeds 1, 2: ((0.53 − 0.50) + (0.39 − 0.40)) / 2 = +0.01 → +1.00 points
    assert vat.endswith("| +1.00 (seeds 1, 2) |") and "1: 0.5300 (0.5400; 4/5; 1.5)" in vat
    # the random-init regime's vat is its own row, paired with the random-init none: +6.00, not with the pretrained one
    assert next(line for line in table if "| d | random | vat |" in line).endswith("| +6.00 (seeds 1) |")
    assert any("| d | pretrained | rdrop@0.3 | 101: 0.4700" in line and "no seed shared" in line for line in table)
    assert "not in this directory" in next(line for line in table if "| e | pretrained | vat |" in line)


def test_archive_comparison_keeps_a_diverged_run_as_the_run_cache_reuses_it(tmp_path):
    out, dest = tmp_path / "compare", tmp_path / "archive"
    statuses = {"d.pretrained.none/seed-1": {"status": "completed"},
                "d.pretrained.noise/seed-1": {"status": "failed", "diverged": True},
                "d.pretrained.noise/seed-2": {"status": "failed", "diverged": False}}  # a crash: not a result
    for name, status in statuses.items():
        run = out / "runs" / name
        run.mkdir(parents=True)
        (run / "status.json").write_text(json.dumps(status))
        (run / "config.yaml").write_text("seed: 1\n")
    (out / "runs" / "d.pretrained.none/seed-1" / "metrics.json").write_text(json.dumps({
        "dev": {"f1": 0.41}, "test": {"f1": 0.40}, "epochs": 5, "best_epoch": 4, "train": {"wall_time_s": 60.0}}))
    (out / "comparison.yaml").write_text("design: {}\n")
    result = subprocess.run([sys.executable, "scripts/archive_comparison.py", str(out), str(dest)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 finished run(s)" in result.stdout
    noise = next(line for line in (dest / "runs.md").read_text().splitlines() if "| noise |" in line)
    assert noise == "| d | pretrained | noise | 1: diverged (F1 0) | -40.00 (seeds 1) |"
