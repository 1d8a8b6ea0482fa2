"""Finished runs kept as one compact file: ``runs.jsonl.gz``, one JSON line per run directory.

A committed benchmark has hundreds of runs of four small files each (``status.json``,
``metrics.json``, ``config.yaml``, ``history.jsonl``). :func:`pack` stores each run as
``{"run": <path relative to the root>, "files": {<name>: <text>}}``, byte for byte, and removes the
directories; :func:`expanded` gives the readers (``regner report``, the benchmark's report builder)
a directory tree again, in a temporary directory, so every reader keeps working on run directories
and a report rebuilt from the archive is the report built from the runs.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from regner.errors import UserError

ARCHIVE = "runs.jsonl.gz"
RUN_FILES = ("status.json", "metrics.json", "config.yaml", "history.jsonl")


def run_directories(root: Path) -> list[Path]:
    """Every run directory under ``root``: a directory with a ``status.json`` or ``metrics.json``."""
    found = {p.parent for name in ("status.json", "metrics.json") for p in root.rglob(name)}
    return sorted(found)


def pack(root: str | Path, exclude: tuple[str, ...] = (), remove: bool = True) -> Path:
    """Write ``root/runs.jsonl.gz`` from the run directories under ``root`` (not those under a
    top-level directory named in ``exclude``) and, with ``remove``, delete the files it stored
    (and the directories left empty). Returns the archive's path."""
    root = Path(root)
    runs = [d for d in run_directories(root) if d.relative_to(root).parts[0] not in exclude]
    if not runs:
        raise UserError(f"no run directories (status.json or metrics.json) under {root}")
    records = []
    for directory in runs:
        files = {name: _read_text(directory / name) for name in RUN_FILES if (directory / name).is_file()}
        records.append({"run": directory.relative_to(root).as_posix(), "files": files})
    target = root / ARCHIVE
    partial = target.with_name(target.name + ".tmp")
    # mtime=0: the same runs give the same bytes, so a repack changes nothing in git
    with open(partial, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as handle:
        for record in records:
            handle.write((json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    partial.replace(target)
    if remove:
        for record in records:
            directory = root / record["run"]
            for name in record["files"]:
                (directory / name).unlink()
            while directory != root and directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
                directory = directory.parent
    return target


def _read_text(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as handle:  # newline="": stored byte for byte
        return handle.read()


def read(archive: str | Path) -> list[dict]:
    """The records of an archive; a damaged one is a UserError naming the file and line."""
    archive = Path(archive)
    records = []
    try:
        with gzip.open(archive, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    record = json.loads(line)
                    if not isinstance(record.get("run"), str) or not isinstance(record.get("files"), dict):
                        raise ValueError("a record needs a string 'run' and a 'files' object")
                    if Path(record["run"]).is_absolute() or ".." in Path(record["run"]).parts:
                        raise ValueError(f"run path {record['run']!r} leaves the archive's directory")
                except (ValueError, AttributeError) as err:
                    raise UserError(f"{archive}:{number}: not a run record ({err})") from None
                records.append(record)
    except (OSError, EOFError) as err:
        raise UserError(f"{archive}: cannot read the run archive ({err})") from None
    return records


def unpack(archive: str | Path, destination: str | Path) -> list[Path]:
    """Recreate the run directories of ``archive`` under ``destination``; returns them."""
    destination = Path(destination)
    made = []
    for record in read(archive):
        directory = destination / record["run"]
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in record["files"].items():
            if name not in RUN_FILES or not isinstance(text, str):
                raise UserError(f"{archive}: run {record['run']} holds an unexpected file {name!r}")
            target = directory / name
            if target.is_symlink():  # a mirrored file of the same name: the archive's copy is read
                target.unlink()
            with open(target, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
        made.append(directory)
    return made


@contextlib.contextmanager
def expanded(path: str | Path) -> Iterator[Path]:
    """A directory of run directories for ``path``: ``path`` itself, or, where it is an archive or a
    directory holding ``runs.jsonl.gz``, a temporary copy of the archive's runs beside whatever else
    ``path`` holds (removed afterwards)."""
    path = Path(path)
    archive = path if path.is_file() and path.name.endswith(".jsonl.gz") else path / ARCHIVE
    if not archive.is_file():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="regner-runs-") as scratch:
        root = Path(scratch) / (path.name if path.is_dir() else archive.name.split(".")[0])
        root.mkdir()
        if path.is_dir():  # what is not archived (throughput.json, timing.json, ...) reads as before
            _mirror(path, root)
        unpack(archive, root)
        yield root


def _mirror(source: Path, destination: Path) -> None:
    """``destination`` as a tree of real directories with links to ``source``'s files (so that
    unpacking into it can never write into ``source``)."""
    for entry in source.iterdir():
        if entry.name == ARCHIVE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            (destination / entry.name).mkdir()
            _mirror(entry, destination / entry.name)
        else:
            (destination / entry.name).symlink_to(entry.resolve())
