"""Text and chat distillation rows tokenised with a tokenizer's chat template: equal to a manual
`apply_chat_template` + encode reference, the mask exactly on the completion tokens (with the
template's end-of-turn token), and clear errors on mixed files, missing keys, rows too long and
a tokenizer without a template."""

from __future__ import annotations

import json

import pytest

from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs, distillation_inputs, read_jsonl
from workbench.core.text_rows import TextEncoder, prompt_id_of

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
            "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
PLAIN = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
         "{% if add_generation_prompt %}assistant: {% endif %}")  # no end-of-turn text after a message
WORDS = ["system", "user", "assistant", "user:", "assistant:", "system:", "be", "brief"] + [f"w{i}" for i in range(30)]


def _tokenizer(template: str | None = TEMPLATE):
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate([*specials, *WORDS])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>",
                                                pad_token="<|endoftext|>", chat_template=template)


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _reference(tok, prompt_messages, completion, end_of_turn):
    """The manual reference: the prompt templated with the generation prompt, then the completion."""
    prompt = tok.apply_chat_template(prompt_messages, tokenize=True, add_generation_prompt=True)
    if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
        prompt = prompt["input_ids"]
    return list(prompt), tok.encode(completion, add_special_tokens=False) + end_of_turn


def test_text_rows_equal_the_manual_reference_with_the_mask_on_the_completion(tmp_path):
    tok = _tokenizer()
    eot = [tok.convert_tokens_to_ids("<|im_end|>")]
    assert TextEncoder(tok).end_of_turn == eot
    rows = [{"prompt": "w1 w2 w3", "completion": "w4 w5", "source": "teacher", "seed": 3},
            {"prompt": "w6", "completion": "w7 w8 w9 w10", "source": "base"}]
    x = Inputs.from_jsonl(_write(tmp_path / "t.jsonl", rows), tokenizer=tok)
    for i, r in enumerate(rows):
        prompt, completion = _reference(tok, [{"role": "user", "content": r["prompt"]}], r["completion"], eot)
        n = len(prompt) + len(completion)
        assert x.tokens[i, :n].tolist() == prompt + completion
        assert x.mask[i].nonzero().flatten().tolist() == list(range(len(prompt), n))  # exactly the completion
        assert int(x.prompt_lengths[i]) == len(prompt)
        # the whole conversation rendered by the template is the same tokens
        full = tok.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                        {"role": "assistant", "content": r["completion"]}], tokenize=False)
        assert tok.encode(full, add_special_tokens=False) == prompt + completion
    assert x.sources == ["teacher", "base"] and x.seeds == [3, None]
    assert x.prompt_ids == [prompt_id_of("w1 w2 w3"), prompt_id_of("w6")]


def test_chat_rows_take_the_last_assistant_message_as_the_completion(tmp_path):
    tok = _tokenizer()
    eot = [tok.convert_tokens_to_ids("<|im_end|>")]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "w1 w2"},
                {"role": "assistant", "content": "w3"}, {"role": "user", "content": "w4"},
                {"role": "assistant", "content": "w5 w6"}]
    rows = read_jsonl(_write(tmp_path / "c.jsonl", [{"messages": messages, "source": "teacher", "prompt_id": 7}]),
                      tokenizer=tok)
    prompt, completion = _reference(tok, messages[:-1], "w5 w6", eot)
    assert rows == [{"prompt": prompt, "completion": completion, "source": "teacher", "prompt_id": 7}]


def test_a_template_with_no_end_of_turn_appends_nothing():
    tok = _tokenizer(PLAIN)
    enc = TextEncoder(tok)
    assert enc.end_of_turn == []
    prompt, completion = enc.encode({"prompt": "w1", "completion": "w2 w3", "source": "teacher"}, "text", "row")
    assert tok.convert_ids_to_tokens(prompt) == ["user:", "w1", "assistant:"] and completion == tok.encode("w2 w3")


def test_teacher_and_base_text_files_pair_on_the_prompt_hash(tmp_path):
    tok = _tokenizer()
    prompts = [f"w{i} w{i + 1}" for i in range(12)]
    teacher = _write(tmp_path / "teacher.jsonl", [{"prompt": p, "completion": "w20", "source": "teacher"} for p in prompts])
    base = _write(tmp_path / "base.jsonl", [{"messages": [{"role": "user", "content": p}, {"role": "assistant",
                                             "content": "w21 w22"}], "source": "base"} for p in prompts[::-1]])
    x = distillation_inputs([teacher, base], max_rows=100, tokenizer=tok)
    assert len(x) == 24 and sorted(x.sources) == ["base"] * 12 + ["teacher"] * 12
    by_pid: dict[int, set[str]] = {}
    for pid, src in zip(x.prompt_ids, x.sources):
        by_pid.setdefault(pid, set()).add(src)
    assert len(by_pid) == 12 and all(v == {"teacher", "base"} for v in by_pid.values())


def test_errors_name_the_row_and_the_fix(tmp_path):
    tok = _tokenizer()
    mixed = _write(tmp_path / "mixed.jsonl", [{"prompt": "w1", "completion": "w2", "source": "teacher"},
                                              {"prompt": [5], "completion": [6], "source": "teacher"}])
    with pytest.raises(DataError, match=r"mixes row kinds: line 1 is a 'text' row but line 2 is a 'tokens' row"):
        read_jsonl(mixed, tokenizer=tok)
    no_source = _write(tmp_path / "nosrc.jsonl", [{"prompt": "w1", "completion": "w2"}])
    with pytest.raises(DataError, match=r"nosrc.jsonl:1 lacks \['source'\]"):
        read_jsonl(no_source, tokenizer=tok)
    no_completion = _write(tmp_path / "nocomp.jsonl", [{"prompt": "w1", "source": "teacher"}])
    with pytest.raises(DataError, match=r"lacks \['completion'\]"):
        read_jsonl(no_completion, tokenizer=tok)
    user_last = _write(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "w1"}], "source": "base"}])
    with pytest.raises(DataError, match=r"chat.jsonl:1: a chat row needs .* roles are \['user'\]"):
        read_jsonl(user_last, tokenizer=tok)
    long = _write(tmp_path / "long.jsonl", [{"prompt": "w1", "completion": "w2", "source": "teacher"},
                                            {"prompt": "w1", "completion": " ".join(["w2"] * 20), "source": "teacher"}])
    with pytest.raises(DataError, match=r"long.jsonl:2: the row is 27 tokens \(6 prompt \+ 21 completion\) but the "
                                        r"model's context is 16\. Truncate the completion or filter"):
        read_jsonl(long, tokenizer=tok, n_ctx=16)
    assert len(read_jsonl(long, tokenizer=tok, n_ctx=27)) == 2
    with pytest.raises(ConfigError, match="has no chat template.*tokenizer.chat_template = .*token-id rows"):
        read_jsonl(long, tokenizer=_tokenizer(None))
    with pytest.raises(DataError, match="holds text rows, which need the model's tokenizer"):
        read_jsonl(long)
