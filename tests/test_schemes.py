import pytest

from regner.data.schemes import TagSchemeError, spans_to_bio, tags_to_spans


def test_bio():
    spans, problems = tags_to_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"], "bio")
    assert spans == [(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC")]
    assert problems == []


def test_bioes_and_bmes_agree():
    bioes = ["S-PER", "B-ORG", "I-ORG", "E-ORG", "O", "B-LOC", "E-LOC"]
    bmes = ["S-PER", "B-ORG", "M-ORG", "E-ORG", "O", "B-LOC", "E-LOC"]
    expected = [(0, 1, "PER"), (1, 4, "ORG"), (5, 7, "LOC")]
    assert tags_to_spans(bioes, "bioes")[0] == expected
    assert tags_to_spans(bmes, "bmes")[0] == expected


def test_stray_inside_tag_starts_new_entity_when_repairing():
    spans, problems = tags_to_spans(["O", "I-PER", "I-PER", "O", "B-PER", "I-ORG"], "bio")
    assert spans == [(1, 3, "PER"), (4, 5, "PER"), (5, 6, "ORG")]
    assert [p.index for p in problems] == [1, 5]


def test_stray_inside_tag_raises_in_error_mode():
    with pytest.raises(TagSchemeError) as info:
        tags_to_spans(["O", "O", "I-PER"], "bio", on_invalid="error")
    assert info.value.index == 2


def test_unclosed_bioes_entity_is_a_violation():
    spans, problems = tags_to_spans(["B-PER", "I-PER", "O"], "bioes")
    assert spans == [(0, 2, "PER")]
    assert len(problems) == 1


def test_unknown_tag_for_scheme():
    with pytest.raises(TagSchemeError, match="unknown tag 'E-PER' for scheme bio"):
        tags_to_spans(["B-PER", "E-PER"], "bio")
    with pytest.raises(TagSchemeError, match="unknown tag"):
        tags_to_spans(["X"], "bio")


def test_spans_to_bio_roundtrip():
    spans = [(0, 2, "PER"), (3, 4, "LOC")]
    tags = spans_to_bio(5, spans)
    assert tags == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert tags_to_spans(tags, "bio")[0] == spans
