"""Every bad input gets one clear paragraph on stderr, runs never clobber each other, nothing is lost.

The table-driven tests run the real ``regner`` command in a subprocess and check, for each case: the
exit code, that stderr names the key / file / line, that no traceback is printed anywhere, that stdout
carries no log lines, and that no existing run directory was modified (every file's bytes and mtime).
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_cli import regner, run_dirs

FAST = ["data.train_size=120", "data.dev_size=30", "data.test_size=30", "trainer.max_epochs=2", "trainer.batch_size=16",
        "trainer.progress=false", "encoder.hidden_size=32", "encoder.num_layers=1", "head.head_size=16"]


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``directory`` (hidden ones too): mtime and content hash."""
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(directory.rglob("*")) if p.is_file()}


def clean_failure(result, *needles, code=2):
    """The contract of a refused input: exit code, the named key/file/line on stderr, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr[-3000:])
    assert "Traceback" not in result.stderr + result.stdout
    assert "[ERROR]" not in result.stdout and "error:" not in result.stdout  # errors belong on stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A completed tiny run: the target of resume/predict/evaluate cases, and the 'existing run'."""
    cwd = tmp_path_factory.mktemp("finished")
    result = regner("train", *FAST, "trainer.progress=true", "hydra.run.dir=done", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""  # logs and progress bars go to stderr; stdout is for results
    return cwd / "done"


# -- bad config values: refused before any data is read --------------------------------------------------------
CONFIG_CASES = [
    (["trainer.batch_size=0"], ["trainer.batch_size=0", "an integer ≥ 1"]),
    (["trainer.lr=abc"], ["trainer.lr='abc'", "a number > 0"]),
    (["trainer.max_epochs=0"], ["trainer.max_epochs=0", "an integer ≥ 1"]),
    (["trainer.max_epochs=-1"], ["trainer.max_epochs=-1"]),
    (["trainer.precision=fp8"], ["trainer.precision='fp8'", "fp32, bf16, fp16"]),
    (["data.max_length=1024"], ["data.max_length=1024", "≤ 512", "position embeddings"]),
    (["alpha=-1", "regularizer=rdrop"], ["alpha=-1", "≥ 0"]),
    (["regularizer=fgm", "regularizer.target=nope"], ["regularizer.target='nope'", "weights or embeds"]),
    (["trainer.num_threads=0"], ["trainer.num_threads=0"]),
    (["data=demo", "+data.encoding=klingon"], ["data.encoding='klingon'", "codec"]),
]


@pytest.mark.parametrize("args,needles", CONFIG_CASES, ids=[" ".join(a) for a, _ in CONFIG_CASES])
def test_bad_config_values_are_refused_before_reading_data(tmp_path, finished_run, args, needles):
    before = snapshot(finished_run)
    result = regner("train", *args, "trainer.progress=false", cwd=tmp_path)
    clean_failure(result, *needles)
    (run_dir,) = run_dirs(tmp_path)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "ConfigError" in status["reason"]
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoint").exists()
    assert "data demo:" not in (run_dir / "regner.log").read_text()  # refused before the data was read
    assert snapshot(finished_run) == before


# -- bad files ----------------------------------------------------------------------------------------------------
def test_non_utf8_data_file_names_file_line_and_the_encoding_option(tmp_path):
    (tmp_path / "gbk.txt").write_bytes("张 B-PER\n三 I-PER\n\n北 B-LOC\n京 I-LOC\n".encode("gbk"))
    result = regner("train", "data=conll", "data.train=gbk.txt", "trainer.progress=false", cwd=tmp_path)
    clean_failure(result, "gbk.txt:1:", "byte offset 0", "data.encoding=gb18030")
    (run_dir,) = run_dirs(tmp_path)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"


def test_data_encoding_reads_gbk_and_a_utf8_bom_is_skipped(tmp_path):
    from regner.data.readers import read_conll

    (tmp_path / "gbk.txt").write_bytes("张 B-PER\n三 I-PER\n在 O\n".encode("gbk"))
    (tmp_path / "bom.txt").write_bytes("\ufeff张 B-PER\n三 I-PER\n在 O\n".encode("utf-8"))
    for path, encoding in ((tmp_path / "gbk.txt", "gb18030"), (tmp_path / "bom.txt", "utf-8")):
        (example,) = read_conll(path, encoding=encoding)
        assert example.text == "张三在" and [(e.start, e.end, e.type) for e in example.entities] == [(0, 2, "PER")]


def test_conll_columns_are_chosen_and_said(tmp_path, caplog):
    from regner.data.errors import DataError
    from regner.data.readers import read_conll

    (tmp_path / "three.txt").write_text("张 NR B-PER\n三 NR I-PER\n在 P O\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        (last,) = read_conll(tmp_path / "three.txt")
    assert [(e.start, e.end, e.type) for e in last.entities] == [(0, 2, "PER")]
    assert "3 columns per line; reading the token from column 0 and the tag from column -1" in caplog.text
    with pytest.raises(DataError, match="three.txt:1: unknown tag 'NR'"):  # column 1 holds POS tags, not BIO
        read_conll(tmp_path / "three.txt", tag_column=1, on_invalid="error")
    with pytest.raises(DataError, match=r"three.txt:1: expected .*at least 5 columns"):
        read_conll(tmp_path / "three.txt", tag_column=4)


def test_declared_label_without_training_example_is_warned(caplog):
    from omegaconf import OmegaConf

    from regner.data.errors import DataError
    from regner.data.loading import load_splits

    cfg = OmegaConf.create({"format": "demo", "name": "demo", "train_size": 60, "dev_size": 20, "test_size": 0,
                            "labels": ["DATE", "LOC", "ORG", "PER", "TITLE", "EVENT"]})
    with caplog.at_level("WARNING"):
        splits = load_splits(cfg)
    assert splits.labels[-1] == "EVENT" and "declares ['EVENT'] but the training split has no example" in caplog.text
    cfg.labels = ["PER"]
    with pytest.raises(DataError, match="does not list"):
        load_splits(cfg)


# -- predict --------------------------------------------------------------------------------------------------------
def test_predict_bad_lines_get_error_records_and_the_rest_is_predicted(tmp_path, finished_run):
    (tmp_path / "in.txt").write_bytes("张伟在北京工作。\n".encode() + b"\xff\xfe\xe5\n" +
                                      '{"text": 5}\n{"text": "李四"}\n{oops\n'.encode())
    result = regner("predict", f"ckpt={finished_run}", "input=in.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r.get("text") for r in rows] == ["张伟在北京工作。", None, None, "李四", None]
    assert rows[1] == {"line": 2, "error": "in.txt:2: byte ff at column 1 (in bytes) is not valid UTF-8"}
    assert rows[2]["line"] == 3 and '"text"' in rows[2]["error"] and "malformed JSON" in rows[4]["error"]
    assert "3 of 5 input lines could not be read" in result.stderr and "Traceback" not in result.stderr


PREDICT_CASES = [
    (["batch_size=abc"], ["batch_size='abc'", "an integer ≥ 1"]),
    (["batch_size=0"], ["batch_size=0", "an integer ≥ 1"]),
    (["threshold=x"], ["threshold='x'", "a finite number"]),
    (["on_error=maybe"], ["on_error='maybe'", "record or fail"]),
    (["colour=red"], ["colour=red", "regner predict --help"]),
    (["on_error=fail"], ["<stdin>:2:", "not valid UTF-8", "on_error=fail"]),
]


@pytest.mark.parametrize("args,needles", PREDICT_CASES, ids=[" ".join(a) for a, _ in PREDICT_CASES])
def test_predict_bad_options_are_one_paragraph(tmp_path, finished_run, args, needles):
    result = subprocess.run([sys.executable, "-m", "regner.cli", "predict", f"ckpt={finished_run}", *args],
                            cwd=tmp_path, capture_output=True, input="好\n".encode() + b"\xff\n", timeout=300,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    result.stderr, result.stdout = result.stderr.decode(), result.stdout.decode()
    clean_failure(result, *needles)
    assert result.stdout == ""


def test_predict_records_a_lone_surrogate_and_goes_on(tmp_path, finished_run):
    """A JSON line whose text is a lone surrogate escape is valid JSON but no text: with on_error=record
    it gets an error record naming the line, and the other lines are predicted (exit 0)."""
    lines = '{"text": "张伟在北京。"}\n{"text": "\\ud800x"}\n李娜\n'
    result = subprocess.run([sys.executable, "-m", "regner.cli", "predict", f"ckpt={finished_run}"], cwd=tmp_path,
                            capture_output=True, input=lines.encode(), timeout=300,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [sorted(r) for r in records] == [["entities", "text"], ["error", "line"], ["entities", "text"]]
    assert records[1]["line"] == 2 and "unpaired surrogate" in records[1]["error"]
    assert "1 of 3 input lines" in result.stderr.decode()


def test_predict_help_and_version():
    help_text = regner("predict", "--help", cwd=Path.cwd())
    assert help_text.returncode == 0 and "on_error" in help_text.stdout and "batch_size" in help_text.stdout
    version = regner("--version", cwd=Path.cwd())
    from regner import __version__

    assert version.returncode == 0 and version.stdout.startswith(f"regner {__version__}")


def test_train_help_lists_groups_and_main_keys():
    result = regner("train", "--help", cwd=Path.cwd())
    assert result.returncode == 0
    for needle in ("regularizer: awp, fgm, gp, mean_teacher, noise, none, pgd, rdrop, rdrop_fgm, stack, vat", "trainer.patience=3", "trainer.num_threads",
                   "alpha=1.0", "resume=RUN_DIR"):
        assert needle in result.stdout, needle


# -- evaluate / report ---------------------------------------------------------------------------------------------
def test_evaluate_on_data_with_no_shared_type_is_an_error(tmp_path, finished_run):
    (tmp_path / "other.jsonl").write_text(json.dumps({"text": "苹果很好吃", "entities": [
        {"start": 0, "end": 2, "type": "FRUIT"}]}, ensure_ascii=False) + "\n", encoding="utf-8")
    result = regner("evaluate", f"ckpt={finished_run}", "data=jsonl", "data.train=other.jsonl",
                    "data.dev=other.jsonl", cwd=tmp_path)
    clean_failure(result, "no type in common", "FRUIT")
    (status,) = tmp_path.glob("outputs/evaluate/*/*/status.json")
    assert json.loads(status.read_text())["status"] == "failed" and not (status.parent / "metrics.json").exists()


def test_report_skips_evaluate_outputs_with_a_count(tmp_path, finished_run):
    import shutil

    shutil.copytree(finished_run, tmp_path / "outputs" / "run")
    result = regner("evaluate", f"ckpt={finished_run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = regner("report", "outputs", "--no-plots", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "1 runs." in report.stdout and "Skipped 1 directory with a status.json that are not training runs" \
        in report.stdout


# -- run directories: locks, no overwrite, resume targets -----------------------------------------------------------
def test_new_run_into_an_existing_run_directory_is_refused(tmp_path, finished_run):
    before = snapshot(finished_run)
    result = regner("train", *FAST, f"hydra.run.dir={finished_run}", cwd=tmp_path)
    clean_failure(result, f"{finished_run} already holds a run (status: completed)", "resume=")
    assert snapshot(finished_run) == before


RESUME_CASES = [
    ("completed", [], ["this run has already completed"]),
    ("nonexistent", [], ["no such directory"]),
    ("unfinished", ["data.max_length=64"], ["cannot change data.max_length when resuming", "trainer.max_epochs"]),
    ("unfinished", ["regularizer=rdrop"], ["cannot change regularizer when resuming"]),
    ("unfinished", ["trainer.max_epochs=0"], ["trainer.max_epochs=0 is not valid"]),
]


@pytest.fixture(scope="module")
def unfinished_run(finished_run, tmp_path_factory):
    """A copy of the finished run made to look interrupted after epoch 1."""
    import shutil

    run_dir = tmp_path_factory.mktemp("unfinished") / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "metrics.json").unlink()
    (run_dir / "status.json").write_text(json.dumps({"status": "interrupted"}))
    return run_dir


@pytest.mark.parametrize("target,extra,needles", RESUME_CASES, ids=[f"{t} {' '.join(e)}" for t, e, _ in RESUME_CASES])
def test_rejected_resume_leaves_its_target_untouched(tmp_path, finished_run, unfinished_run, target, extra, needles):
    run_dir = {"completed": finished_run, "unfinished": unfinished_run, "nonexistent": tmp_path / "nowhere"}[target]
    before = snapshot(run_dir) if run_dir.exists() else None
    result = regner("train", f"resume={run_dir}", *extra, cwd=tmp_path)
    clean_failure(result, *needles)
    if before is None:
        assert not run_dir.exists()
    else:
        assert snapshot(run_dir) == before
    assert not (tmp_path / "outputs").exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    from regner.errors import RunDirError
    from regner.runs.directory import LOCK_FILE, RunLock, lock_holder

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": 999_999_999, "host": "gone", "command": "regner train"}))
    assert lock_holder(run_dir) is None  # a file nobody holds is no lock
    with caplog.at_level("WARNING"):
        lock = RunLock(run_dir).acquire()
    assert "taking over a stale lock left by process 999999999" in caplog.text
    holder = subprocess.run([sys.executable, "-c", "from pathlib import Path; from regner.runs.directory import lock_holder; "
                             f"print(lock_holder(Path({str(run_dir)!r}))['pid'])"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert holder.stdout.strip() == str(os.getpid())
    child = subprocess.run([sys.executable, "-c", "from pathlib import Path; from regner.runs.directory import RunLock; "
                            f"RunLock(Path({str(run_dir)!r})).acquire()"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert f"is in use by process {os.getpid()}" in child.stderr
    lock.release()
    assert not (run_dir / LOCK_FILE).exists()
    with pytest.raises(RunDirError, match="already holds a run"):
        from regner.runs.directory import claim_new_run_dir

        (run_dir / "status.json").write_text("{}")
        claim_new_run_dir(run_dir, explicit=True)


def test_clock_named_run_directories_never_collide(tmp_path):
    from regner.runs.directory import claim_new_run_dir

    first = claim_new_run_dir(tmp_path / "12-00-00", explicit=False)
    second = claim_new_run_dir(tmp_path / "12-00-00", explicit=False)  # same second, first still running
    assert (first.run_dir.name, second.run_dir.name) == ("12-00-00", "12-00-00-2")
    first.release()
    second.release()


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError


def start(*args, cwd):
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "REGNER_CACHE": os.environ["REGNER_CACHE"], "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "regner.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def comparable(metrics):
    return {k: metrics[k] for k in ("dev", "test", "best_epoch", "epochs")} | {"steps": metrics["train"]["steps"]}


LONG = ["data.train_size=300", "data.dev_size=30", "data.test_size=30", "trainer.max_epochs=3", "trainer.batch_size=8",
        "trainer.progress=false", "encoder.hidden_size=32", "encoder.num_layers=1", "head.head_size=16",
        "regularizer=rdrop"]


def test_a_running_training_is_never_joined_or_resumed_by_another_process(tmp_path):
    run_dir = tmp_path / "outputs" / "run"  # under outputs/, where trainer.resume=true looks
    job = start("train", *LONG, "trainer.max_epochs=200", "trainer.patience=0", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    try:
        wait_for(lambda: (run_dir / "history.jsonl").exists() or job.poll() is not None)
        assert job.poll() is None, job.stderr.read()[-3000:]
        before = {k: v for k, v in snapshot(run_dir).items() if k != "regner.log"}
        second = regner("train", *LONG, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        clean_failure(second, f"{run_dir} is in use by process {job.pid}")
        picked = regner("train", "trainer.resume=true", cwd=tmp_path)
        clean_failure(picked, "no unfinished run", "1 unfinished run(s) are still being trained")
        direct = regner("train", f"resume={run_dir}", cwd=tmp_path)
        clean_failure(direct, "it is still being trained by process")
        after = snapshot(run_dir)
        # what the running training itself writes may change; nothing else may
        own = ("history", "last", "status", "checkpoint", "tensorboard")
        assert {k: v for k, v in after.items() if k in before and not k.startswith(own)} == \
            {k: v for k, v in before.items() if not k.startswith(own)}
        job.send_signal(signal.SIGTERM)
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 143, stderr[-3000:]
    log_text = (run_dir / "regner.log").read_text()
    assert "is in use" not in log_text and "cannot resume" not in log_text  # the refused commands wrote nothing


def test_sigterm_saves_and_the_printed_command_resumes_to_the_uninterrupted_result(tmp_path):
    run_dir = tmp_path / "run"
    job = start("train", *LONG, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    try:
        wait_for(lambda: (run_dir / "history.jsonl").exists() or job.poll() is not None)
        job.send_signal(signal.SIGTERM)  # at once: two of the three epochs are still to go
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "stopped by SIGTERM at step" in stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and not (run_dir / "metrics.json").exists()
    command = stderr.strip().splitlines()[-1].split()
    assert command[:2] == ["regner", "train"] and status["resume_command"] == " ".join(command)
    resumed = regner(*command[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = regner("train", *LONG, "hydra.run.dir=reference", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert comparable(json.loads((run_dir / "metrics.json").read_text())) == \
        comparable(json.loads((tmp_path / "reference" / "metrics.json").read_text()))


def test_sigint_is_a_clean_stop_with_exit_130(tmp_path):
    run_dir = tmp_path / "run"
    job = start("train", *FAST, "data.train_size=400", "trainer.batch_size=4", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    try:
        wait_for(lambda: (run_dir / "status.json").exists() and b"running" in (run_dir / "status.json").read_bytes()
                 or job.poll() is not None)
        time.sleep(1.0)
        job.send_signal(signal.SIGINT)
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"


def test_resume_applies_the_safe_overrides_and_says_so(tmp_path, finished_run):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "metrics.json").unlink()
    (run_dir / "status.json").write_text(json.dumps({"status": "interrupted"}))
    result = regner("train", f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resume: trainer.max_epochs=3 (was 2)" in result.stderr
    assert "max_epochs: 3" in (run_dir / "config.yaml").read_text()
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3]


# -- sweeps --------------------------------------------------------------------------------------------------------
def test_sweep_warns_when_the_swept_key_is_unused(capsys):
    from regner.cli.sweep import warn_unused_sweep_keys

    (warning,) = warn_unused_sweep_keys(["--multirun", "alpha=1,4"])
    assert "alpha is swept over 1, 4 but regularizer=none does not read it" in warning
    assert "identical runs" in capsys.readouterr().err
    assert warn_unused_sweep_keys(["--multirun", "regularizer=rdrop", "alpha=1,4"]) == []
    (kl_warning,) = warn_unused_sweep_keys(["--multirun", "regularizer=fgm,rdrop", "kl=globalpointer,softmax"])
    assert "regularizer=fgm" in kl_warning


def test_sweep_job_that_already_completed_is_skipped(tmp_path):
    args = [*FAST, "trainer.max_epochs=1", "seed=1,2", "hydra.sweep.dir=sweep"]
    first = regner("sweep", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    def runs():  # the jobs' directories (multirun.yaml is the sweep's own record, rewritten by Hydra)
        return {k: v for k, v in snapshot(tmp_path / "sweep").items() if "/" in k and not k.endswith("regner.log")}

    before = runs()
    again = regner("sweep", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("this sweep job already completed; skipped") == 2
    assert runs() == before


# -- what a finished run says, and the report's small print ----------------------------------------------------------
def test_end_of_run_summary_and_the_headline_are_stated(finished_run):
    log_text = (finished_run / "regner.log").read_text()
    assert "done: dev F1" in log_text and "tokens/s" in log_text and "trained all 2 epochs" in log_text
    assert f"metrics (with the per-type tables): {(finished_run / 'metrics.json').resolve()}" in log_text
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["headline"].startswith("dev.f1 / test.f1: micro F1 over exact (start, end, type) spans")
    assert metrics["early_stopping"] == {"stopped": False, "patience": 3, "max_epochs": 2}


def test_early_stopping_is_named_in_the_summary(caplog):
    from regner.training.run import log_summary

    metrics = {"dev": {"f1": 0.5}, "test": None, "best_epoch": 2, "epochs": 5,
               "early_stopping": {"stopped": True, "patience": 3, "max_epochs": 10},
               "train": {"wall_time_s": 10.0, "train_time_s": 8.0, "tokens_per_s": 1000.0}}
    with caplog.at_level("INFO"):
        log_summary(metrics, Path("run"))
    assert "early stopping ended it after epoch 5 of 10" in caplog.text and "trainer.patience=0" in caplog.text


def test_seqeval_view_is_labelled_and_counts_what_flattening_dropped():
    from regner.data.types import Entity, Example
    from regner.inference.metrics import seqeval_report

    example = Example("张三李四", [Entity(0, 2, "PER"), Entity(2, 4, "PER")])
    predicted = {Entity(0, 2, "PER"): 3.0, Entity(0, 3, "PER"): 1.0, Entity(2, 4, "PER"): 2.0}
    report = seqeval_report([example], [predicted])
    assert report["predicted_spans_dropped_by_flattening"] == 1 and "not the headline" in report["note"]
    assert report["micro avg"]["f1-score"] == 1.0  # the overlapping (0, 3) was flattened away


def test_tiny_encoder_shape_follows_the_hidden_size():
    from hydra import compose, initialize_config_dir

    from regner.config.paths import config_dir

    def compose_config(*overrides):
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    cfg = compose_config("encoder.hidden_size=256")
    assert (cfg.encoder.num_heads, cfg.encoder.intermediate_size) == (4, 1024)
    cfg = compose_config()
    assert (cfg.encoder.num_heads, cfg.encoder.intermediate_size) == (2, 512)
    cfg = compose_config("encoder.hidden_size=256", "encoder.num_heads=8")
    assert cfg.encoder.num_heads == 8


@pytest.mark.parametrize("override,key", [
    ("data.window_overlap=126", "data.window_overlap"),
    ("encoder.num_heads=3", "encoder.num_heads"),
    ("kl.reduction=max", "kl.reduction"),
    ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio"),
    ("trainer.device=gpu", "trainer.device"),
    ("head.head_size=1", "head.head_size"),
])
def test_validation_names_the_key_in_process(override, key):
    from regner.config.validation import validate_config
    from regner.errors import ConfigError

    from .test_training import compose_config

    validate_config(compose_config())  # the defaults are valid
    with pytest.raises(ConfigError) as err:
        validate_config(compose_config(override))
    assert err.value.key == key and str(err.value).startswith(f"{key}=")


def test_report_small_print(tmp_path):
    from regner.experiments.report import build_report

    from .test_report import fake_run

    for seed in (1, 2):
        fake_run(tmp_path, "s", seed, "none", 0.60 + seed / 100, seed, dataset="jsonl")
        fake_run(tmp_path, "s", 10 + seed, "fgm", 0.62 + seed / 100, seed, dataset="jsonl")
    text, rows = build_report([tmp_path], plots=True)
    assert "Within noise of `none`: none of them" not in text
    assert "f1_vs_strength.png not drawn: no regularizer was run at two or more strengths" in text
    assert not (tmp_path / "f1_vs_strength.png").exists() and (tmp_path / "f1_by_regularizer.png").exists()
    import csv

    cells = [cell for row in csv.reader((tmp_path / "report.csv").open()) for cell in row]
    assert "—" not in cells and "" in cells  # an empty cell is empty, not a dash


def test_report_tells_user_files_apart(tmp_path):
    from regner.experiments.report.records import collect_runs

    from .test_report import fake_run

    for i, name in enumerate(("a.jsonl", "b.jsonl")):
        run_dir = fake_run(tmp_path, "s", i, "none", 0.6, 1, dataset="jsonl")
        (run_dir / "config.yaml").write_text(json.dumps({"seed": 1, "data": {"name": "jsonl", "train": f"/d/{name}"},
                                                         "regularizer": {"name": "none"}}))
    datasets = sorted(r.dataset for r in collect_runs([tmp_path]))
    assert datasets == ["jsonl (a.jsonl)", "jsonl (b.jsonl)"]


def test_a_clock_named_run_dir_override_is_not_a_user_named_one():
    import hydra  # noqa: F401  (registers the ${now:...} resolver)
    from omegaconf import OmegaConf

    from regner.cli.runs import named_on_command_line as _explicit

    clock = OmegaConf.create({"overrides": {"hydra": ["hydra.run.dir=outputs/evaluate/${now:%H-%M-%S}"]}})
    named = OmegaConf.create({"overrides": {"hydra": ["hydra.run.dir=my_run"]}})
    assert not _explicit(clock, "hydra.run.dir") and _explicit(named, "hydra.run.dir")
