"""Values that were silently accepted and now are refused with the key, or the file and line."""

import json

import pytest

from regner.data.errors import DataError
from regner.errors import ConfigError

from .test_training import compose_config


@pytest.mark.parametrize("overrides,key", [
    (["regularizer=rdrop", "alpha=inf"], "alpha"),
    (["regularizer=rdrop", "alpha=nan"], "alpha"),
    (["regularizer=fgm", "regularizer.epsilon=inf"], "regularizer.epsilon"),
    (["regularizer=noise", "regularizer.sigma=inf"], "regularizer.sigma"),
    (["head.threshold=inf"], "head.threshold"),
    (["trainer.lr=inf"], "trainer.lr"),
])
def test_infinite_or_nan_numbers_are_refused_with_their_key(overrides, key):
    from regner.config.validation import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(compose_config(*overrides))
    assert err.value.key == key and "finite" in err.value.expected


def test_finite_values_still_pass():
    from regner.config.validation import validate_config

    validate_config(compose_config("regularizer=fgm", "regularizer.epsilon=0.5", "head.threshold=-2.5"))


@pytest.mark.parametrize("entity,says", [
    ({"start": 0, "end": 2, "type": 5}, "entity type 5: a type is a non-empty string"),
    ({"start": 0, "end": 2, "type": ""}, "entity type '': a type is a non-empty string"),
    ({"start": 0, "end": 2, "type": "  "}, "a type is a non-empty string"),
    ({"start": True, "end": 2, "type": "PER"}, "non-integer offsets"),
    ({"start": 0, "end": True, "type": "PER"}, "non-integer offsets"),
])
def test_jsonl_entities_with_bad_types_or_boolean_offsets_name_file_and_line(tmp_path, entity, says):
    from regner.data.readers import read_jsonl

    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"text": "张三在北京", "entities": []}, ensure_ascii=False) + "\n" +
                    json.dumps({"text": "张三在北京", "entities": [entity]}, ensure_ascii=False) + "\n")
    with pytest.raises(DataError, match=rf"train.jsonl:2: .*{says}"):
        read_jsonl(path)


def test_cluener_boolean_offsets_are_refused(tmp_path):
    from regner.data.readers import read_cluener

    path = tmp_path / "train.json"
    path.write_text(json.dumps({"text": "张三在北京", "label": {"name": {"张三": [[False, True]]}}}, ensure_ascii=False))
    with pytest.raises(DataError, match="train.json:1: .*non-integer offsets"):
        read_cluener(path)
