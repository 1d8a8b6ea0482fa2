"""Tag sequences (BIO, BIOES, BMES) to character spans, and flat spans back to BIO tags.

Real corpora contain invalid sequences (Weibo has ``I-`` tags with no ``B-`` before them). The
decoder either raises (``on_invalid="error"``) or repairs the way most tolerant decoders do: a stray
continuation tag starts a new entity. Repairs are counted so the loader can report them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from regner.data.errors import DataError

# Role of each prefix in each scheme: begin, inside, end, single.
SCHEMES: dict[str, dict[str, str]] = {
    "bio": {"B": "begin", "I": "inside"},
    "bioes": {"B": "begin", "I": "inside", "E": "end", "S": "single"},
    "bmes": {"B": "begin", "M": "inside", "E": "end", "S": "single"},
}
SCHEMES["iobes"] = SCHEMES["bioes"]
OUTSIDE = "O"


class TagSchemeError(ValueError):
    """A tag sequence the scheme cannot decode; ``index`` is the offending token."""

    def __init__(self, index: int, message: str):
        self.index = index
        super().__init__(message)


@dataclass
class TagProblem:
    """Where a tag sequence broke the scheme (index into the sequence) and how."""

    index: int
    message: str


def split_tag(tag: str, scheme: str) -> tuple[str, str | None]:
    """Return (role, type) for a tag; raises ValueError for a tag the scheme does not know."""
    if tag == OUTSIDE:
        return "outside", None
    prefix, sep, type_ = tag.partition("-")
    roles = SCHEMES[scheme]
    if not sep or not type_ or prefix not in roles:
        allowed = ", ".join(f"{p}-TYPE" for p in roles)
        raise ValueError(f"unknown tag {tag!r} for scheme {scheme} (expected O, {allowed})")
    return roles[prefix], type_


def tags_to_spans(
    tags: Sequence[str], scheme: str = "bio", on_invalid: str = "repair"
) -> tuple[list[tuple[int, int, str]], list[TagProblem]]:
    """Decode tags into (start, end_exclusive, type) token spans.

    Returns the spans and the list of scheme violations that were repaired. An unknown tag, or
    with ``on_invalid="error"`` the first violation, raises :class:`TagSchemeError`.
    """
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    spans: list[tuple[int, int, str]] = []
    problems: list[TagProblem] = []
    open_start: int | None = None
    open_type: str | None = None

    def close(end: int) -> None:
        nonlocal open_start, open_type
        if open_start is not None:
            spans.append((open_start, end, open_type))
        open_start, open_type = None, None

    def violation(i: int, message: str) -> None:
        if on_invalid == "error":
            raise TagSchemeError(i, message)
        problems.append(TagProblem(i, message))

    has_end_tags = "end" in SCHEMES[scheme].values()
    for i, tag in enumerate(tags):
        try:
            role, type_ = split_tag(tag, scheme)
        except ValueError as err:
            raise TagSchemeError(i, str(err)) from None
        continues = open_start is not None and open_type == type_
        if role == "outside":
            if open_start is not None and has_end_tags:
                violation(i, f"entity {open_type} opened at token {open_start} is not closed by E-")
            close(i)
        elif role == "begin":
            if open_start is not None and has_end_tags:
                violation(i, f"entity {open_type} opened at token {open_start} is not closed by E-")
            close(i)
            open_start, open_type = i, type_
        elif role == "single":
            if open_start is not None and has_end_tags:
                violation(i, f"entity {open_type} opened at token {open_start} is not closed by E-")
            close(i)
            spans.append((i, i + 1, type_))
        elif role in ("inside", "end"):
            if not continues:
                violation(i, f"tag {tag!r} at token {i} continues no open {type_} entity")
                close(i)
                open_start, open_type = i, type_
            if role == "end":
                close(i + 1)
    if open_start is not None and has_end_tags:
        violation(len(tags) - 1, f"entity {open_type} opened at token {open_start} is not closed by E-")
    close(len(tags))
    return spans, problems


def spans_to_bio(length: int, spans: Sequence[tuple[int, int, str]]) -> list[str]:
    """BIO tags for flat spans over ``length`` positions (used for seqeval's report)."""
    tags = [OUTSIDE] * length
    for start, end, type_ in sorted(spans):
        if any(t != OUTSIDE for t in tags[start:end]):
            raise ValueError("spans overlap; BIO cannot represent nested entities")
        tags[start] = f"B-{type_}"
        for i in range(start + 1, end):
            tags[i] = f"I-{type_}"
    return tags


def check_scheme_name(scheme: str, path: str | None = None) -> str:
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise DataError(f"unknown tag scheme {scheme!r}; choose one of {sorted(SCHEMES)}", path)
    return scheme
