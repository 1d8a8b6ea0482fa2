"""CLUENER2020 leaderboard submissions: the official prediction format and its scoring rules.

A submission (``cluener_predict.json``) has one JSON line per test text, in the test file's order::

    {"id": 0, "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}}}

``label`` maps each entity type to the mentions found, each mention to its ``[start, end]`` character
offsets with the end **inclusive** (CLUENER's own convention); a text with no entity has ``"label": {}``.

Scoring follows CLUENER2020's rules: an entity counts as correct when its (text id, type, start, end)
is in the gold file, so micro precision, recall and F1 over exact spans, the same definition as
regner's headline F1 (``regner.inference.metrics``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from regner.data.errors import DataError


def cluener_record(record_id: Any, entities: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One submission line from regner's entities (``{start, end, type, text}``, end exclusive)."""
    label: dict[str, dict[str, list[list[int]]]] = {}
    for entity in sorted(entities, key=lambda e: (e["start"], e["end"], e["type"])):
        spans = label.setdefault(entity["type"], {}).setdefault(entity["text"], [])
        spans.append([entity["start"], entity["end"] - 1])
    return {"id": record_id, "label": label}


def spans_of(record: dict[str, Any], where: str, text: str | None = None) -> set[tuple[Any, str, int, int]]:
    """{(id, type, start, end_inclusive)} of one CLUENER line; with ``text``, each mention must be what
    its offsets cover there (a submission whose mention and offsets disagree is malformed)."""
    if "label" not in record:
        raise DataError(f'{where}: no "label" field')
    found = set()
    for entity_type, mentions in (record.get("label") or {}).items():
        if not isinstance(mentions, dict):
            raise DataError(f"{where}: label.{entity_type} must map mentions to [start, end] lists")
        for mention, spans in mentions.items():
            for span in spans:
                if not (isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span)):
                    raise DataError(f"{where}: label.{entity_type}.{mention}: {span!r} is not [start, end]")
                start, end = span
                if text is not None and text[start : end + 1] != mention:
                    raise DataError(f"{where}: label.{entity_type}: {mention!r} at [{start}, {end}] reads "
                                    f"{text[start:end + 1]!r} in the text")
                found.add((record.get("id"), entity_type, start, end))
    return found


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"malformed JSON ({err.msg})", str(path), number) from None
    return records


def score_cluener(predicted: list[dict[str, Any]], gold: list[dict[str, Any]]) -> dict[str, float]:
    """Micro precision / recall / F1 of a submission against gold CLUENER lines (matched by ``id``;
    gold lines without an ``id`` are numbered 0, 1, ... in file order, as the test file's ids are)."""
    gold_by_id = {}
    for index, record in enumerate(gold):
        gold_by_id[record.get("id", index)] = record
    predicted_ids = [record.get("id") for record in predicted]
    missing = [i for i in gold_by_id if i not in set(predicted_ids)]
    if missing or len(predicted_ids) != len(set(predicted_ids)):
        raise DataError(f"the submission must have exactly one line per gold id: {len(missing)} missing "
                        f"(first: {missing[:3]}), {len(predicted_ids) - len(set(predicted_ids))} repeated")
    gold_spans, predicted_spans = set(), set()
    for number, record in enumerate(predicted, start=1):
        truth = gold_by_id.get(record["id"])
        if truth is None:
            raise DataError(f"submission line {number}: id {record['id']!r} is not in the gold file")
        record_id = record["id"]
        truth = {**truth, "id": record_id}
        predicted_spans |= spans_of(record, f"submission line {number}", truth.get("text"))
        gold_spans |= spans_of(truth, f"gold id {record_id}")
    correct = len(predicted_spans & gold_spans)
    precision = correct / len(predicted_spans) if predicted_spans else 0.0
    recall = correct / len(gold_spans) if gold_spans else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "correct": correct,
            "predicted": len(predicted_spans), "gold": len(gold_spans)}
