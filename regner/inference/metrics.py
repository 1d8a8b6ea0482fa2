"""Entity-level precision/recall/F1 on exact (start, end, type) spans, plus seqeval for flat data."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from regner.data.schemes import spans_to_bio
from regner.data.types import Entity, Example


def _prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": n_gold, "predicted": n_pred, "correct": tp}


def span_scores(gold: Sequence[Iterable[Entity]], pred: Sequence[Iterable[Entity]],
                labels: Sequence[str] | None = None) -> dict:
    """Micro and per-type scores. Each list element holds one example's entities."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold examples but {len(pred)} predicted")
    counts: dict[str, list[int]] = {label: [0, 0, 0] for label in labels or []}
    for gold_entities, pred_entities in zip(gold, pred):
        g, p = set(gold_entities), set(pred_entities)
        for entity in g:
            counts.setdefault(entity.type, [0, 0, 0])[2] += 1
        for entity in p:
            row = counts.setdefault(entity.type, [0, 0, 0])
            row[1] += 1
            row[0] += entity in g
    per_type = {label: _prf(*row) for label, row in sorted(counts.items())}
    total = [sum(row[i] for row in counts.values()) for i in range(3)]
    micro = _prf(*total)
    macro_f1 = sum(v["f1"] for v in per_type.values()) / len(per_type) if per_type else 0.0
    return {**{k: micro[k] for k in ("precision", "recall", "f1")}, "macro_f1": macro_f1,
            "support": micro["support"], "predicted": micro["predicted"], "correct": micro["correct"],
            "per_type": per_type}


def flatten_predictions(scored: dict[Entity, float]) -> list[Entity]:
    """Greedy non-overlapping subset, best score first: what a BIO tagger could output."""
    chosen: list[Entity] = []
    for entity, _ in sorted(scored.items(), key=lambda kv: (-kv[1], kv[0])):
        if all(entity.end <= c.start or c.end <= entity.start for c in chosen):
            chosen.append(entity)
    return sorted(chosen)


def seqeval_report(examples: Sequence[Example], pred: Sequence[dict[Entity, float]]) -> dict | None:
    """seqeval's entity report on BIO tags, or None when the gold data is nested."""
    if not all(ex.is_flat() for ex in examples):
        return None
    from seqeval.metrics import classification_report

    y_true = [spans_to_bio(len(ex.text), [(e.start, e.end, e.type) for e in ex.entities]) for ex in examples]
    y_pred = [spans_to_bio(len(ex.text), [(e.start, e.end, e.type) for e in flatten_predictions(p)])
              for ex, p in zip(examples, pred)]
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    overlapping = sum(len(p) - len(flatten_predictions(p)) for p in pred)
    out: dict = {name: {k: float(v) for k, v in row.items()} for name, row in report.items()}
    out["note"] = SEQEVAL_NOTE
    out["predicted_spans_dropped_by_flattening"] = overlapping
    return out


SEQEVAL_NOTE = ("not the headline: the headline is the exact-span micro F1 above (nested/overlapping predictions "
                "count as they are). seqeval scores BIO tags, so overlapping predicted spans were first reduced to a "
                "non-overlapping set, greedily by score; its micro avg differs by that flattening")
