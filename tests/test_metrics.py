import pytest

from regner.data.types import Entity, Example
from regner.inference.metrics import flatten_predictions, seqeval_report, span_scores


def test_hand_made_counts():
    gold = [[Entity(0, 2, "PER"), Entity(3, 5, "LOC")], [Entity(1, 4, "ORG")]]
    pred = [[Entity(0, 2, "PER"), Entity(3, 5, "PER")], [Entity(1, 4, "ORG"), Entity(0, 1, "LOC")]]
    scores = span_scores(gold, pred, ["LOC", "ORG", "PER"])
    # tp=2 (PER 0-2, ORG 1-4); predicted 4; gold 3
    assert scores["precision"] == pytest.approx(0.5) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 1, "correct": 0}
    assert scores["per_type"]["PER"]["precision"] == 0.5 and scores["per_type"]["PER"]["recall"] == 1.0
    assert scores["per_type"]["ORG"]["f1"] == 1.0


def test_boundary_and_type_must_both_match():
    gold = [[Entity(0, 3, "PER")]]
    assert span_scores(gold, [[Entity(0, 2, "PER")]])["f1"] == 0.0
    assert span_scores(gold, [[Entity(0, 3, "LOC")]])["f1"] == 0.0
    assert span_scores(gold, [[Entity(0, 3, "PER")]])["f1"] == 1.0


def test_empty_predictions_and_gold():
    assert span_scores([[]], [[]])["f1"] == 0.0
    with pytest.raises(ValueError):
        span_scores([[]], [])


def test_seqeval_on_flat_data_matches_span_scores():
    examples = [Example("张三在北京", [Entity(0, 2, "PER"), Entity(3, 5, "LOC")])]
    pred = [{Entity(0, 2, "PER"): 2.0, Entity(3, 5, "PER"): 1.0}]
    report = seqeval_report(examples, pred)
    assert report["micro avg"]["f1-score"] == pytest.approx(span_scores([examples[0].entities], [list(pred[0])])["f1"])


def test_seqeval_skipped_for_nested_gold_and_overlaps_flattened():
    nested = [Example("北京大学", [Entity(0, 2, "LOC"), Entity(0, 4, "ORG")])]
    assert seqeval_report(nested, [{}]) is None
    assert flatten_predictions({Entity(0, 4, "ORG"): 3.0, Entity(0, 2, "LOC"): 1.0}) == [Entity(0, 4, "ORG")]
