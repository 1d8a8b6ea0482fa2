"""The one option parser of predict, export, serve and report (regner/cli/options.py)."""

import pytest

from regner.cli.options import Command, Option
from regner.errors import ConfigError, UserError

COMMAND = Command(
    "demo", "usage: regner demo DIR [key=value ...]", "A command for the tests.",
    (Option("ckpt", None, "checkpoint", required="a run directory (ckpt=RUN)"),
     Option("batch_size", "64", "windows per pass", kind="int", low=1),
     Option("port", "8000", "port", kind="int", low=0, high=65535),
     Option("threshold", None, "logit", kind="float", expected="a finite number"),
     Option("plots", "true", "draw", kind="bool"),
     Option("backend", None, "torch or onnx", kind="choice", choices=("torch", "onnx")),
     Option("device", "cpu", "where", kind="device"),
     Option("out", None, "where")),
    positional="DIR", aliases={"-o": ("out", None), "--no-plots": ("plots", "false")})


def test_every_spelling_gives_the_same_options():
    forms = [["d1", "ckpt=R", "batch_size=8", "out=X", "plots=false"],
             ["d1", "--ckpt", "R", "--batch-size", "8", "-o", "X", "--no-plots"],
             ["--ckpt=R", "d1", "--batch_size=8", "--out", "X", "--plots", "no"]]
    parsed = [COMMAND.parse(f) for f in forms]
    assert all(p == parsed[0] for p in parsed)
    assert parsed[0]["batch_size"] == 8 and parsed[0]["plots"] is False and parsed[0]["_args"] == ["d1"]
    assert parsed[0]["port"] == 8000 and parsed[0]["threshold"] is None and parsed[0]["device"] == "cpu"


@pytest.mark.parametrize(("args", "key", "expected"), [
    (["batch_size=0"], "batch_size", "an integer ≥ 1"),
    (["batch_size=two"], "batch_size", "an integer ≥ 1"),
    (["port=70000"], "port", "an integer ≥ 0 and ≤ 65535"),
    (["threshold=inf"], "threshold", "a finite number"),
    (["plots=maybe"], "plots", "true or false"),
    (["backend=tf"], "backend", "torch or onnx"),
    (["device=gpu"], "device", "auto, cpu, mps, cuda or cuda:N"),
])
def test_a_bad_value_names_its_key_and_what_is_accepted(args, key, expected):
    with pytest.raises(ConfigError) as err:
        COMMAND.parse(["d1", "ckpt=R", *args])
    assert err.value.key == key and err.value.expected == expected


def test_missing_unknown_and_incomplete_arguments_are_user_errors():
    with pytest.raises(ConfigError, match=r"ckpt=None is not valid: expected a run directory"):
        COMMAND.parse(["d1"])
    with pytest.raises(ConfigError, match="ckpt"):
        COMMAND.parse(["d1", "ckpt="])
    for bad in (["d1", "ckpt=R", "colour=red"], ["d1", "ckpt=R", "--colour", "red"], ["d1", "ckpt=R", "-x"]):
        with pytest.raises(UserError, match=r"unknown argument .*a key among ckpt, batch_size"):
            COMMAND.parse(bad)
    with pytest.raises(UserError, match="-o needs a value"):
        COMMAND.parse(["d1", "ckpt=R", "-o"])
    with pytest.raises(UserError, match="needs at least one DIR"):
        COMMAND.parse(["ckpt=R"])
    no_positional = Command("x", "usage: regner x", "x", (Option("ckpt", None, "c"),))
    with pytest.raises(UserError, match="unknown argument 'stray'"):
        no_positional.parse(["stray"])


def test_help_lists_every_key_with_its_default_and_the_shorthands():
    text = COMMAND.help()
    assert text.startswith("usage: regner demo DIR")
    assert "batch_size  windows per pass [default: 64]" in text and "ckpt        checkpoint\n" in text
    assert "-o = out=VALUE" in text and "--no-plots = plots=false" in text
