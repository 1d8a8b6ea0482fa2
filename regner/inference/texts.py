"""The input of ``regner predict``: plain lines or JSONL, each line read on its own so one bad
line never costs the others."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class InputLine:
    """One line of ``regner predict``'s input: its text, or why it could not be read."""

    number: int
    text: str | None
    error: str | None = None
    id: Any = None  # the JSON line's "id" field, if it has one (CLUENER's test file does)


def read_texts(raw_lines: Iterable[bytes], source: str) -> Iterator[InputLine]:
    """Plain text (one per line) or JSONL with a ``text`` field; blank lines stay as empty texts.
    A line that is not UTF-8, malformed JSON, a JSON object without a string ``text``, or a ``text``
    that is not Unicode (an unpaired surrogate escape) becomes an
    :class:`InputLine` with an ``error`` naming the problem, so it never costs the other lines."""
    for number, raw in enumerate(raw_lines, start=1):
        raw = raw.rstrip(b"\r\n")
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield InputLine(number, None, f"{source}:{number}: byte {raw[err.start:err.start + 1].hex()} at column "
                                          f"{err.start + 1} (in bytes) is not valid UTF-8")
            continue
        if not line.lstrip().startswith("{"):
            yield InputLine(number, line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield InputLine(number, None, f"{source}:{number}: malformed JSON ({err.msg} at column {err.colno})")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            yield InputLine(number, None, f'{source}:{number}: a JSON line needs a string "text" field')
            continue
        problem = text_problem(record["text"])
        if problem:
            yield InputLine(number, None, f'{source}:{number}: "text" {problem}')
            continue
        yield InputLine(number, record["text"], id=record.get("id"))


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be tokenised, or None. JSON can spell what UTF-8 cannot hold: a lone
    surrogate escape (``"\\ud800"``) decodes to a string no tokenizer accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (f"holds an unpaired surrogate \\u{ord(text[err.start]):04x} at character {err.start + 1} (not "
                "Unicode text; encode the character itself, or a valid surrogate pair)")
    return None
