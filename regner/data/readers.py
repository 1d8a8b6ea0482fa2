"""Readers for the supported file formats. Each returns ``list[Example]`` in canonical form.

Every reader checks what it reads and raises :class:`DataError` naming file and line, because a
silently misaligned span poisons every number computed afterwards.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from regner.data.errors import DataError
from regner.data.schemes import TagSchemeError, check_scheme_name, tags_to_spans
from regner.data.types import Entity, Example

log = logging.getLogger(__name__)

_POSITION_DIGITS = re.compile(r"^(.+?)(\d+)$")


def open_lines(path: str | Path, encoding: str = "utf-8", key: str = "data.encoding") -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file; a byte that is not ``encoding`` is a DataError naming the
    line and byte offset. A UTF-8 byte-order mark is skipped whatever the encoding says."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", str(path))
    if path.is_dir():
        raise DataError("expected a file but found a directory", str(path))
    raw = path.read_bytes()
    codec = codecs.lookup(encoding).name
    try:
        text = raw.decode("utf-8-sig" if codec == "utf-8" else encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"byte {raw[err.start:err.start + 1].hex(' ')} at byte offset {err.start} (column {column} in bytes) is "
            f"not valid {encoding} ({err.reason}). If the file uses another encoding, set {key}, e.g. "
            f"{key}=gb18030 for GBK/GB2312 files", str(path), line) from None
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):
        yield number, line.rstrip("\r\n")


def json_object(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg} at column {err.colno})", str(path), number) from None
    if not isinstance(record, dict):
        raise DataError("expected a JSON object per line", str(path), number)
    text = record.get("text")
    if not isinstance(text, str):
        raise DataError('missing or non-string "text" field', str(path), number)
    return record


def _checked_entity(
    text: str, start, end, type_, mention, path: Path, number: int
) -> Entity:
    """Validate one exclusive-end span against its text; ``mention`` may be None."""
    if not isinstance(type_, str) or not type_.strip():
        raise DataError(f"span [{start}, {end}] has entity type {type_!r}: a type is a non-empty string", str(path),
                        number)
    if isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int):
        raise DataError(f"span [{start}, {end}] of type {type_!r} has non-integer offsets", str(path), number)
    if not (0 <= start < end <= len(text)):
        raise DataError(
            f"span [{start}, {end}) of type {type_!r} is out of range for a text of {len(text)} characters",
            str(path),
            number,
        )
    if mention is not None and text[start:end] != mention:
        raise DataError(
            f"span [{start}, {end}) of type {type_!r} covers {text[start:end]!r} but the file says {mention!r}",
            str(path),
            number,
        )
    return Entity(start, end, str(type_))


def _read_json_lines(path: str | Path, entities_of, encoding: str = "utf-8") -> list[Example]:
    """One example per non-blank JSON line; ``entities_of(record, text, path, line)`` yields the
    line's entities (already checked against the text)."""
    path = Path(path)
    examples = []
    for number, line in open_lines(path, encoding):
        if not line.strip():
            continue
        record = json_object(path, number, line)
        text = record["text"]
        entities = set(entities_of(record, text, path, number))
        examples.append(Example(text, sorted(entities), f"{path}:{number}"))
    return examples


def read_cluener(path: str | Path, end_inclusive: bool = True, encoding: str = "utf-8") -> list[Example]:
    """CLUENER JSON lines: ``{"text", "label": {type: {mention: [[start, end], ...]}}}``."""

    def entities_of(record: dict, text: str, path: Path, number: int):
        labels = record.get("label") or {}
        if not isinstance(labels, dict):
            raise DataError('"label" must be an object {type: {mention: [[start, end], ...]}}', str(path), number)
        for type_, mentions in labels.items():
            if not isinstance(mentions, dict):
                raise DataError(f"label {type_!r} must map mentions to offset lists", str(path), number)
            for mention, offsets in mentions.items():
                for pair in offsets:
                    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                        raise DataError(f"offsets of {mention!r} must be [start, end] pairs", str(path), number)
                    start, end = pair
                    end = end + 1 if end_inclusive and isinstance(end, int) and not isinstance(end, bool) else end
                    yield _checked_entity(text, start, end, type_, mention, path, number)

    return _read_json_lines(path, entities_of, encoding)


def read_jsonl(path: str | Path, end_inclusive: bool = False, encoding: str = "utf-8") -> list[Example]:
    """The canonical format: ``{"text", "entities": [{"start", "end", "type"[, "text"]}]}``."""

    def entities_of(record: dict, text: str, path: Path, number: int):
        raw = record.get("entities") or []
        if not isinstance(raw, list):
            raise DataError('"entities" must be a list', str(path), number)
        for item in raw:
            if not isinstance(item, dict) or not {"start", "end", "type"} <= item.keys():
                raise DataError('each entity needs "start", "end" and "type"', str(path), number)
            end = item["end"] + 1 if end_inclusive and type(item["end"]) is int else item["end"]
            yield _checked_entity(text, item["start"], end, item["type"], item.get("text"), path, number)

    return _read_json_lines(path, entities_of, encoding)


def token_text(token: str, strip_position_digits: bool) -> str:
    """The characters a CoNLL token stands for. Weibo writes ``科0``: a character plus its
    position inside a word; the digits are stripped, keeping at least one character."""
    if strip_position_digits:
        match = _POSITION_DIGITS.match(token)
        if match:
            return match.group(1)
    return token


def read_conll(
    path: str | Path,
    scheme: str = "bio",
    on_invalid: str = "repair",
    strip_position_digits: bool = False,
    token_column: int = 0,
    tag_column: int = -1,
    encoding: str = "utf-8",
) -> list[Example]:
    """One ``token<whitespace>tag`` per line, a blank line between sentences. Lines with more
    columns (``token POS chunk tag``) take the token from ``token_column`` and the tag from
    ``tag_column`` (CoNLL's convention: first and last); that choice is logged once per file.

    Tokens are concatenated without separators (Chinese text); a token longer than one character
    simply covers several characters, so spans stay exact in character offsets.
    """
    path = Path(path)
    scheme = check_scheme_name(scheme, str(path))
    examples: list[Example] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    repaired = 0

    def flush() -> None:
        nonlocal repaired
        if not tokens:
            return
        try:
            spans, problems = tags_to_spans(tags, scheme, on_invalid)
        except TagSchemeError as err:
            raise DataError(f"{err} (scheme {scheme})", str(path), first_line + err.index) from None
        repaired += len(problems)
        starts, text = [], ""
        for token in tokens:
            starts.append(len(text))
            text += token
        starts.append(len(text))
        entities = sorted({Entity(starts[s], starts[e], t) for s, e, t in spans})
        examples.append(Example(text, entities, f"{path}:{first_line}"))
        tokens.clear()
        tags.clear()

    needed = max(token_column if token_column >= 0 else -token_column - 1,
                 tag_column if tag_column >= 0 else -tag_column - 1) + 1
    wide = 0
    for number, line in open_lines(path, encoding):
        if not line.strip():
            flush()
            continue
        fields = line.split()
        if len(fields) < max(2, needed):
            raise DataError(f"expected 'token tag' separated by whitespace (at least {max(2, needed)} columns for "
                            f"data.columns.token={token_column}, data.columns.tag={tag_column}), got {line!r}",
                            str(path), number)
        if len(fields) > 2 and not wide:
            wide = len(fields)
            log.warning("%s:%d: %d columns per line; reading the token from column %d and the tag from column %d "
                        "(set data.columns.token / data.columns.tag to choose others)", path, number, wide,
                        token_column, tag_column)
        if not tokens:
            first_line = number
        tokens.append(token_text(fields[token_column], strip_position_digits))
        tags.append(fields[tag_column])
    flush()
    if repaired:
        log.warning("%s: repaired %d tag sequence(s) that broke the %s scheme", path, repaired, scheme)
    return examples

