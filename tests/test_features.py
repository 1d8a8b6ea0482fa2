from regner.data.features import char_to_token_span, encode_examples, token_to_char_span, window_starts
from regner.data.types import Entity, Example
from regner.model.decoding import merge_window_predictions


def roundtrip(tokenizer, text, entities):
    (window,), stats = encode_examples([Example(text, entities)], tokenizer, {"X": 0}, max_length=512)
    recovered = sorted(Entity(*token_to_char_span(window.offsets, s, e), "X") for _, s, e in window.spans)
    return recovered, stats


def test_offsets_roundtrip_cjk_latin_digits_spaces_and_unknown(char_tokenizer):
    text = "北京 大学的ABC公司于2019年在上海？成立"
    entities = [Entity(0, 2, "X"), Entity(3, 5, "X"), Entity(6, 9, "X"), Entity(12, 17, "X"), Entity(18, 20, "X"),
                Entity(20, 21, "X")]  # 北京, 大学, ABC, 2019年, 上海, ？ (unknown to the vocabulary)
    recovered, stats = roundtrip(char_tokenizer, text, entities)
    assert recovered == entities
    assert stats.misaligned == 0


def test_unk_latin_word_boundary_inside_token_is_counted_not_silently_lost(char_tokenizer):
    # "xyΩ" is one word and "Ω" is not in the vocabulary, so the whole word becomes one [UNK]
    text = "在xyΩ工作"
    recovered, stats = roundtrip(char_tokenizer, text, [Entity(1, 3, "X")])
    assert recovered == [] and stats.misaligned == 1 and stats.entities == 1


def test_entity_with_surrounding_space_maps_to_covered_tokens():
    offsets = [(0, 1), (2, 3), (3, 4)]  # the space at 1 is covered by no token
    assert char_to_token_span(offsets, 1, 4) == (1, 2)
    assert char_to_token_span(offsets, 0, 3) == (0, 1)
    assert char_to_token_span([(0, 3)], 1, 3) is None  # token straddles the start


def test_window_starts_cover_everything():
    assert window_starts(5, 10, 2) == [0]
    starts = window_starts(25, 10, 3)
    assert starts[0] == 0 and starts[-1] == 15
    assert all(b - a <= 7 for a, b in zip(starts, starts[1:]))


def test_long_text_windows_keep_every_entity(char_tokenizer):
    unit = "张三在北京大学工作。"
    text = unit * 12  # 120 characters, far beyond max_length=32
    entities = [Entity(i * 10 + 3, i * 10 + 7, "ORG") for i in range(12)] + [Entity(i * 10, i * 10 + 2, "PER") for i in range(12)]
    label2id = {"ORG": 0, "PER": 1}
    windows, stats = encode_examples([Example(text, entities)], char_tokenizer, label2id, max_length=32, overlap=8)
    assert len(windows) > 3 and all(len(w) <= 32 for w in windows)
    assert stats.outside_windows == 0 and stats.misaligned == 0 and stats.long_examples == 1
    # a perfect model predicts every labelled span in every window; merging recovers the gold exactly
    found = [[(t, s, e, 1.0) for t, s, e in w.spans] for w in windows]
    merged = merge_window_predictions(windows, found, ["ORG", "PER"], 1)
    assert sorted(merged[0]) == sorted(entities)


def test_entity_longer_than_overlap_across_boundary_is_counted(char_tokenizer):
    text = "今天" * 10 + "北京大学北京大学" + "今天" * 10
    entity = Entity(20, 28, "ORG")
    _, stats = encode_examples([Example(text, [entity])], char_tokenizer, {"ORG": 0}, max_length=12, overlap=2)
    assert stats.outside_windows == 1


def test_feature_cache_hits_and_survives_damage(char_tokenizer, tmp_path, caplog):
    import logging

    from regner.data.features import encode_examples_cached

    examples = [Example("张三在北京大学工作。", [Entity(0, 2, "PER"), Entity(3, 7, "ORG")])]
    labels = {"ORG": 0, "PER": 1}
    first = encode_examples_cached(examples, char_tokenizer, labels, 32, 8, tmp_path)
    (cached,) = list(tmp_path.glob("*.pkl"))
    with caplog.at_level(logging.INFO, logger="regner.data.features"):
        second = encode_examples_cached(examples, char_tokenizer, labels, 32, 8, tmp_path)
    assert second == first
    # the hit is said, with the file, its key, and how to turn the cache off (where a user would look)
    (hit,) = [r.getMessage() for r in caplog.records if "feature cache" in r.getMessage()]
    assert str(cached) in hit and f"key {cached.stem}" in hit and "trainer.feature_cache=null" in hit
    cached.write_bytes(b"not a pickle")
    assert encode_examples_cached(examples, char_tokenizer, labels, 32, 8, tmp_path) == first
    other = encode_examples_cached(examples, char_tokenizer, labels, 16, 8, tmp_path)  # other sizes, other key
    assert len(list(tmp_path.glob("*.pkl"))) == 2 and other[0][0].input_ids == first[0][0].input_ids
