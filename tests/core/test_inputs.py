"""Inputs: padding, masks, selection, validation errors, JSONL round trip, content hash."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.core.errors import DataError
from workbench.core.inputs import Inputs, read_jsonl, write_jsonl

PINNED_HASH = "ab41dbe620ac820d27026c0b610999b20726b682c392fe49679550ecd867c4fa"


@pytest.fixture
def small() -> Inputs:
    return Inputs.from_sequences(
        [[1, 2], [3]], [[4], [5, 6]], sources=["teacher", "base"], prompt_ids=[0, 0], seeds=[1, 1]
    )


def rows(n: int = 5) -> list[dict]:
    return [
        {"prompt": [1, 2 + i % 2], "completion": list(range(3, 3 + i + 1)), "source": "teacher" if i % 2 else "base",
         "seed": 0, "prompt_id": i // 2}
        for i in range(n)
    ]  # fmt: skip


def test_right_padding_and_masks(small):
    assert small.tokens.tolist() == [[1, 2, 4], [3, 5, 6]]
    assert small.mask.tolist() == [[False, False, True], [False, True, True]]
    x = Inputs.from_sequences([[7], [8, 9, 9]], [[1, 2, 3], []], sources="s", pad_id=0)
    assert x.tokens.tolist() == [[7, 1, 2, 3], [8, 9, 9, 0]]
    assert x.attention_mask.tolist() == [[True, True, True, True], [True, True, True, False]]
    assert x.mask.tolist() == [[False, True, True, True], [False, False, False, False]]
    assert x.prompt_lengths.tolist() == [1, 3] and x.lengths.tolist() == [4, 3]
    assert x.tokens.dtype == torch.long and x.mask.dtype == torch.bool
    assert x.sources == ["s", "s"]
    assert x.next_token_mask().tolist() == [[True, True, True], [False, False, False]]
    full = Inputs.from_sequences([[7], [8, 9, 9]], [[1, 2, 3], []], sources="s", mask="all")
    assert torch.equal(full.mask, full.attention_mask)


def test_prompt_ids_default_to_distinct_prompts():
    x = Inputs.from_sequences([[1, 2], [3], [1, 2]], [[4], [5], [6]], sources=["t", "t", "b"])
    assert x.prompt_ids == [0, 1, 0]


def test_construction_errors():
    with pytest.raises(DataError, match="empty"):
        Inputs.from_sequences([], [], sources=[])
    with pytest.raises(DataError, match="completions"):
        Inputs.from_sequences([[1]], [[1], [2]], sources="s")
    with pytest.raises(DataError, match="sources"):
        Inputs.from_sequences([[1], [2]], [[1], [2]], sources=["a"])
    with pytest.raises(DataError, match="Row 1 is empty"):
        Inputs.from_sequences([[1], []], [[1], []], sources="s")
    with pytest.raises(DataError, match=r"Row 0: completion holds 1.5"):
        Inputs.from_sequences([[1]], [[1.5]], sources="s")
    with pytest.raises(DataError, match="mask mode"):
        Inputs.from_sequences([[1]], [[1]], sources="s", mask="prompt")


def test_validate_names_row_and_id(small):
    assert small.validate(d_vocab=7, n_ctx=3) is small
    with pytest.raises(DataError, match=r"Token id 6 at row 1, position 2 .* outside the vocabulary \[0, 6\)"):
        small.validate(d_vocab=6)
    with pytest.raises(DataError, match=r"Row 0 has 3 tokens, longer than the context n_ctx=2"):
        small.validate(d_vocab=7, n_ctx=2)
    with pytest.raises(DataError, match="pad_id=9"):
        Inputs.from_sequences([[1]], [[2]], sources="s", pad_id=9).validate(d_vocab=5)
    with pytest.raises(DataError, match="No position is marked"):
        Inputs.from_sequences([[1]], [[]], sources="s").validate(d_vocab=5)


def test_select_and_batches():
    data = Inputs.from_sequences([r["prompt"] for r in rows()], [r["completion"] for r in rows()],
                                 [r["source"] for r in rows()])  # fmt: skip
    one = data.select([0])
    assert one.tokens.shape == (1, 3)  # trimmed to its own length
    assert data.select(torch.tensor([True, False, True, False, False])).sources == ["base", "base"]
    assert data.select(slice(1, 3)).prompt_ids == data.prompt_ids[1:3]
    batches = list(data.batches(2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [b.tokens.shape[1] for b in batches] == [4, 6, 7]
    with pytest.raises(DataError, match="empty"):
        data.select([])
    with pytest.raises(DataError, match="out of range"):
        data.select([7])
    with pytest.raises(DataError, match="batch_size"):
        next(data.batches(0))
    moved = data.to("cpu")
    assert moved.device == torch.device("cpu") and moved.content_hash() == data.content_hash()


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "data" / "teacher.jsonl"
    write_jsonl(path, rows())
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows()
    x = Inputs.from_jsonl(path)
    assert len(x) == 5 and x.prompt_ids == [0, 0, 1, 1, 2] and x.seeds == [0] * 5
    assert x.to_rows() == rows()
    again = tmp_path / "again.jsonl"
    write_jsonl(again, x.to_rows())
    assert again.read_bytes() == path.read_bytes()
    assert Inputs.from_jsonl(again).content_hash() == x.content_hash()
    both = Inputs.from_jsonl([path, again])
    assert len(both) == 10 and both.select(list(range(5, 10))).content_hash() == x.content_hash()
    assert len(Inputs.from_jsonl(path, limit=2)) == 2


def test_jsonl_errors(tmp_path):
    with pytest.raises(DataError, match="No data file"):
        Inputs.from_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": [1], "completion": [2], "source": "t"}\n{"prompt": [1]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 lacks \['completion', 'source'\]"):
        read_jsonl(bad)
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1 is not valid JSON"):
        read_jsonl(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="No rows"):
        Inputs.from_jsonl(empty)


def test_content_hash_is_stable(small):
    assert small.content_hash() == PINNED_HASH  # fixed across runs, machines and versions
    padded = Inputs(
        tokens=torch.cat([small.tokens, torch.zeros(2, 3, dtype=torch.long)], dim=1),
        mask=torch.cat([small.mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1),
        attention_mask=torch.cat([small.attention_mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1),
        prompt_lengths=small.prompt_lengths,
        sources=small.sources,
        prompt_ids=small.prompt_ids,
    )
    assert padded.content_hash() == PINNED_HASH  # extra padding does not change content
    prompts, completions = [[1, 2], [3]], [[4], [5, 6]]
    relabelled = Inputs.from_sequences(prompts, completions, sources=["teacher", "teacher"], prompt_ids=[0, 0])
    assert relabelled.content_hash() != PINNED_HASH
    all_mask = Inputs.from_sequences(prompts, completions, sources=["teacher", "base"], prompt_ids=[0, 0], mask="all")
    assert all_mask.content_hash() != PINNED_HASH


def test_shape_checks():
    t = torch.zeros(2, 3, dtype=torch.long)
    m = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(DataError, match="mask has shape"):
        Inputs(t, m[:, :2], m, torch.zeros(2, dtype=torch.long), ["a", "b"], [0, 1])
    with pytest.raises(DataError, match="sources"):
        Inputs(t, m, m, torch.zeros(2, dtype=torch.long), ["a"], [0, 1])
