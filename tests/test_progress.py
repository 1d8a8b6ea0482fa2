"""Progress bars: one live display per process, shared by nested steps; every slow step has a bar."""

import io

import pytest
from rich.console import Console
from rich.progress import Progress, TextColumn

from regner.runs import progress

from .test_training import compose_config


@pytest.fixture
def terminal(monkeypatch):
    """Bars drawn into a buffer that claims to be a terminal; collects every description shown."""
    shown: list[str] = []
    buffer = io.StringIO()

    class Recording(Progress):
        def add_task(self, description, *args, **kwargs):
            shown.append(description)
            return super().add_task(description, *args, **kwargs)

    def new_display():
        console = Console(file=buffer, force_terminal=True, width=120)
        return Recording(TextColumn("{task.description}"), TextColumn("{task.fields[info]}"), console=console,
                         transient=True)

    monkeypatch.setattr(progress, "_new_display", new_display)
    return shown, buffer


def test_nested_steps_share_one_display(terminal):
    shown, buffer = terminal
    with progress.step("outer", 2) as outer:
        assert progress._display is not None
        with progress.step("inner", 3) as inner:  # a second rich Live here would raise LiveError
            inner.advance()
            inner.info("x")
            assert progress._display is not None and len(progress._display.tasks) == 2
        outer.advance()
        assert [t.description for t in progress._display.tasks] == ["outer"]  # a finished step leaves
    assert progress._display is None and shown == ["outer", "inner"]
    assert "outer" in buffer.getvalue()


def test_disabled_or_not_a_terminal_draws_nothing(capsys):
    with progress.step("quiet", 5, enabled=False) as bar:
        bar.advance()
        bar.info("nothing")
        assert progress._display is None
    with progress.step("not a terminal", 5) as bar:  # pytest's stderr is not a terminal
        bar.advance()
        assert progress._display is None
    assert capsys.readouterr().err == ""


def test_training_shows_a_bar_for_every_slow_step(terminal, tmp_path):
    from regner.training.run import run_training

    shown, _ = terminal
    run_training(compose_config("trainer.progress=true", "data.test_size=20"), tmp_path)
    assert shown == ["tokenising train", "tokenising dev", "tokenising test", "epoch 1/1", "evaluating dev",
                     "evaluating dev", "evaluating test"]
    shown.clear()
    run_training(compose_config("trainer.progress=false"), tmp_path / "quiet")
    assert shown == []


def test_predict_and_export_show_bars(terminal, trained_run, tmp_path, monkeypatch):
    import regner.inference.export
    from regner.inference.loaded import LoadedModel

    shown, _ = terminal
    LoadedModel.load(trained_run).predict(["张三在北京"])
    assert shown == ["tokenising input", "predicting"]
    shown.clear()
    steps = []  # the export itself is checked in test_export; here: its four stages move one bar

    def fake_export(ckpt, output, opset, bar):
        for _ in range(4):
            steps.append(progress._display.tasks[0].completed)
            bar.advance()
        return output

    monkeypatch.setattr(regner.inference.export, "_export", fake_export)
    regner.inference.export.export_onnx(trained_run, tmp_path / "onnx")
    assert shown == ["exporting to ONNX"] and steps == [0, 1, 2, 3]
