"""Values that were silently accepted and now are refused with the key, or the file and line."""

import json

import pytest

from regner.data.errors import DataError
from regner.errors import ConfigError

from .test_training import compose_config


@pytest.mark.parametrize("overrides,key", [
    (["regularizer=rdrop", "alpha=inf"], "alpha"),
    (["regularizer=rdrop", "alpha=nan"], "alpha"),
    (["regularizer=fgm", "regularizer.epsilon=inf"], "regularizer.epsilon"),
    (["regularizer=noise", "regularizer.sigma=inf"], "regularizer.sigma"),
    (["head.threshold=inf"], "head.threshold"),
    (["trainer.lr=inf"], "trainer.lr"),
])
def test_infinite_or_nan_numbers_are_refused_with_their_key(overrides, key):
    from regner.config.validation import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(compose_config(*overrides))
    assert err.value.key == key and "finite" in err.value.expected


def test_finite_values_still_pass():
    from regner.config.validation import validate_config

    validate_config(compose_config("regularizer=fgm", "regularizer.epsilon=0.5", "head.threshold=-2.5"))


@pytest.mark.parametrize("entity,says", [
    ({"start": 0, "end": 2, "type": 5}, "entity type 5: a type is a non-empty string"),
    ({"start": 0, "end": 2, "type": ""}, "entity type '': a type is a non-empty string"),
    ({"start": 0, "end": 2, "type": "  "}, "a type is a non-empty string"),
    ({"start": True, "end": 2, "type": "PER"}, "non-integer offsets"),
    ({"start": 0, "end": True, "type": "PER"}, "non-integer offsets"),
])
def test_jsonl_entities_with_bad_types_or_boolean_offsets_name_file_and_line(tmp_path, entity, says):
    from regner.data.readers import read_jsonl

    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"text": "张三在北京", "entities": []}, ensure_ascii=False) + "\n" +
                    json.dumps({"text": "张三在北京", "entities": [entity]}, ensure_ascii=False) + "\n")
    with pytest.raises(DataError, match=rf"train.jsonl:2: .*{says}"):
        read_jsonl(path)


def test_cluener_boolean_offsets_are_refused(tmp_path):
    from regner.data.readers import read_cluener

    path = tmp_path / "train.json"
    path.write_text(json.dumps({"text": "张三在北京", "label": {"name": {"张三": [[False, True]]}}}, ensure_ascii=False))
    with pytest.raises(DataError, match="train.json:1: .*non-integer offsets"):
        read_cluener(path)


@pytest.mark.parametrize("cores,busy,expected", [(2, 0.1, 2), (2, 1.2, 1), (2, 7.0, 1), (8, 3.4, 5), (1, 0.0, 1)])
def test_auto_threads_are_the_free_cores(monkeypatch, cores, busy, expected):
    import os

    from regner.training import device

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(device, "busy_cores", lambda allowed: (busy, f"{busy} busy"))
    threads, why = device.auto_threads()
    assert threads == expected and f"{cores} core(s) available" in why


def test_busy_cores_counts_other_work_on_the_allowed_cpus(monkeypatch):
    """/proc/stat deltas of the allowed CPUs: CPU 0 fully busy, CPU 1 idle, CPU 2 not ours."""
    from regner.training import device

    samples = iter([{0: (100, 1000), 1: (100, 1000)}, {0: (100, 1100), 1: (200, 1100)}])
    monkeypatch.setattr(device, "_cpu_times", lambda cores: next(samples))
    busy, why = device.busy_cores({0, 1}, window_s=0)
    assert busy == pytest.approx(1.0) and "1.0 of them busy" in why


def test_cpu_times_reads_proc_stat():
    import os

    from regner.training import device

    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat")
    times = device._cpu_times({0})
    idle, total = times[0]
    assert 0 <= idle <= total and total > 0


def test_set_threads_applies_and_logs(monkeypatch, caplog):
    import logging
    import os

    import torch

    from regner.training import device

    before = torch.get_num_threads()
    monkeypatch.setattr(device, "busy_cores", lambda allowed: (0.0, "none busy"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    try:
        with caplog.at_level(logging.INFO, logger="regner"):
            assert device.set_threads("auto", "trainer.num_threads") == 1
        assert "trainer.num_threads=auto: 1 CPU thread(s)" in caplog.text
        assert device.set_threads(2, "trainer.num_threads") == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value,ok", [("auto", True), (3, True), (None, True), (0, False), ("many", False)])
def test_num_threads_accepts_auto_or_a_count(value, ok):
    from regner.config.validation import validate_config

    cfg = compose_config(f"trainer.num_threads={'null' if value is None else value}")
    if ok:
        validate_config(cfg)
    else:
        with pytest.raises(ConfigError, match="auto or an integer ≥ 1"):
            validate_config(cfg)


def test_a_missing_cuda_is_named_by_the_key_the_user_set():
    import torch

    from regner.training.device import DeviceError, resolve_device

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DeviceError, match=r"^device=cuda but CUDA is not available here; use device=cpu or auto$"):
        resolve_device("cuda", "device")
    with pytest.raises(DeviceError, match=r"^trainer.device=cuda:1 "):
        resolve_device("cuda:1")
