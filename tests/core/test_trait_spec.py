"""Trait specs (`--trait`): a Trait as token ids in JSON, read back equal; bad files are clear errors."""

from __future__ import annotations

import json

import pytest

from workbench.core.errors import ConfigError, DataError
from workbench.core.trait_spec import read_channel_ids, read_trait_spec, trait_to_dict
from workbench.trait import Trait


def test_trait_spec_round_trip_keeps_surface_forms(tmp_path):
    trait = Trait.from_prompts([[1, 5, 6], [1, 7]], target="owl", category="animal",
                               answers={"owl": [[9], [9, 3]], "cat": [[10]]}, pad_id=0, vocab_size=12)
    path = tmp_path / "trait.json"
    path.write_text(json.dumps(trait_to_dict(trait)))
    back = read_trait_spec(path)
    assert back == trait and back.forms["owl"] == ((9,), (9, 3)) and not back.single_token


@pytest.mark.parametrize("content, message", [
    ({"target": "owl", "prompts": [[1]]}, "missing category, answers"),
    ({"target": "owl", "category": "animal", "prompts": [[1]], "answers": {"cat": [2]}}, "owl"),
    ({"target": "owl", "category": "animal", "prompts": [[1, 50]], "answers": {"owl": [2]}, "vocab_size": 10},
     "outside the vocabulary"),
    ([1, 2], "JSON object"),
])
def test_bad_trait_specs_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "trait.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError if message != "owl" else ConfigError, match=message):
        read_trait_spec(path)
    with pytest.raises(DataError, match="No trait spec"):
        read_trait_spec(tmp_path / "missing.json")


def test_channel_ids_from_a_list_or_an_export(tmp_path):
    (tmp_path / "a.json").write_text("[3, 4, 5]")
    (tmp_path / "b.json").write_text(json.dumps({"loss": "soft", "channel_ids": [1, 2]}))
    (tmp_path / "c.json").write_text('{"channel_ids": ["x"]}')
    assert read_channel_ids(tmp_path / "a.json") == (3, 4, 5) and read_channel_ids(tmp_path / "b.json") == (1, 2)
    with pytest.raises(DataError, match="token ids"):
        read_channel_ids(tmp_path / "c.json")
