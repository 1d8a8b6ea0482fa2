"""Where a saved model is (a run directory, its ``checkpoint/``, or a ``regner export`` directory), and
whether its files are what regner wrote: one check for predict, evaluate, export and serve."""

from __future__ import annotations

from pathlib import Path

from regner.data.errors import DataError
from regner.inference.onnx import ONNX_FILE
from regner.model.span_model import HEAD_WEIGHTS, MODEL_CONFIG
from regner.runs.io import JsonFileError, read_json_object


def checkpoint_dir(path: str | Path) -> Path:
    """Accept a run directory (its ``checkpoint/``) or a checkpoint directory itself."""
    path = Path(path).expanduser()
    for candidate in (path, path / "checkpoint"):
        if (candidate / MODEL_CONFIG).exists():
            return candidate
    if not path.exists():
        raise DataError("no such run or checkpoint directory", str(path))
    raise DataError(f"not a regner checkpoint or run directory (no {MODEL_CONFIG} here or in checkpoint/)", str(path))


class DamagedCheckpoint(DataError):
    """A checkpoint file is missing, cut short or not what regner wrote."""

    def __init__(self, directory: Path, file: str, reason: str):
        super().__init__(f"checkpoint {directory} is damaged: {file}: {reason}. Retrain, restore it from a copy, or "
                         "point ckpt= at another run")


def json_file(directory: Path, name: str, required: bool = True) -> dict | None:
    path = directory / name
    if not path.is_file():
        if required:
            raise DamagedCheckpoint(directory, name, "missing")
        return None
    try:
        return read_json_object(path)
    except JsonFileError as err:
        raise DamagedCheckpoint(directory, name, err.reason) from None


def _tensors_file(directory: Path, name: str) -> None:
    from safetensors import SafetensorError, safe_open

    path = directory / name
    if not path.is_file():
        raise DamagedCheckpoint(directory, name, "missing")
    try:
        with safe_open(str(path), "pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as err:
        raise DamagedCheckpoint(directory, name, f"not a complete safetensors file ({str(err).strip()})") from None


def check_checkpoint(directory: Path) -> dict:
    """Check that ``directory`` holds what ``regner train`` (or ``regner export``) wrote, reading
    headers only; returns its label map. A problem is a :class:`DamagedCheckpoint` naming the file."""
    config = json_file(directory, MODEL_CONFIG)
    labels = config.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise DamagedCheckpoint(directory, MODEL_CONFIG, '"labels" is not a non-empty list of entity type names')
    for name in ("tokenizer.json", "tokenizer_config.json"):
        json_file(directory, name, required=False)
    if config.get("backend") == "onnx":
        onnx = directory / ONNX_FILE
        if not onnx.is_file() or not onnx.stat().st_size:
            raise DamagedCheckpoint(directory, ONNX_FILE, "missing" if not onnx.is_file() else "empty")
        return config
    head = config.get("head")
    if not isinstance(head, dict) or not {"type", "head_size", "rope"} <= set(head):
        raise DamagedCheckpoint(directory, MODEL_CONFIG, '"head" lacks type, head_size or rope')
    encoder = json_file(directory, "config.json")
    if not isinstance(encoder.get("model_type"), str):
        raise DamagedCheckpoint(directory, "config.json", 'no "model_type": not a Hugging Face model config')
    _tensors_file(directory, "model.safetensors")
    _tensors_file(directory, HEAD_WEIGHTS)
    return config


def load_checked(directory: Path, load):
    """``load()`` of the checkpoint in ``directory`` after :func:`check_checkpoint`; whatever still
    fails while loading (weights of the wrong shapes, an edited config) names the directory."""
    check_checkpoint(directory)
    try:
        return load()
    except Exception as err:  # noqa: BLE001 - any failure to load checked files is a damaged checkpoint
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DamagedCheckpoint(directory, "its files do not load together", f"{type(err).__name__}: {reason}") from None
