"""Tokenizers of a lineage's directories are checked equal before any weights load; the error
names the two models and the first difference."""

from __future__ import annotations

import pytest

from workbench.core import hf as hf_module
from workbench.core.errors import IncompatibleModelsError
from workbench.core.hf_tokenizers import check_same_tokenizers, tokenizer_difference
from workbench.core.lineage import Lineage
from workbench.core.toy_hf import toy_tokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


def _dir(root, name, tokenizer, vocab_size):
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=vocab_size,
                                                         n_positions=16)).save_pretrained(root / name)
    if tokenizer is not None:
        tokenizer.save_pretrained(root / name)
    return str(root / name)


def test_equal_tokenizers_pass_and_differences_are_named(tok, tmp_path):
    assert tokenizer_difference(tok, toy_tokenizer()) is None
    other_template = toy_tokenizer()
    other_template.chat_template = tok.chat_template.replace("<|im_start|>assistant", "<|im_start|>bot")
    assert "chat templates differ from character" in tokenizer_difference(tok, other_template)
    smaller = toy_tokenizer(vocab_size=500)
    assert "vocabulary sizes differ" in tokenizer_difference(tok, smaller)
    no_pad = toy_tokenizer()
    no_pad.pad_token = "<|im_end|>"
    assert "pad_token differs" in tokenizer_difference(tok, no_pad)
    dirs = {"base": _dir(tmp_path, "base", tok, len(tok)), "student": _dir(tmp_path, "student", other_template, len(tok)),
            "control": _dir(tmp_path, "control", None, len(tok))}
    check_same_tokenizers({"base": dirs["base"], "control": dirs["control"]})  # no tokenizer saved: skipped
    with pytest.raises(IncompatibleModelsError, match=r"'base' .* and 'student' .* differ: chat templates differ"):
        check_same_tokenizers(dirs)


def test_lineage_refuses_mismatched_tokenizers_before_loading_weights(tok, tmp_path, monkeypatch):
    import json

    from tokenizers import Tokenizer

    state = json.loads(tok.backend_tokenizer.to_str())  # same size, two tokens' ids swapped
    vocab = state["model"]["vocab"]
    a, b = (t for t, i in vocab.items() if i in (300, 301))
    vocab[a], vocab[b] = vocab[b], vocab[a]
    other = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)),
                                                 eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                                 chat_template=tok.chat_template)
    assert other.get_vocab()[a] == tok.get_vocab()[b]
    dirs = {"base": _dir(tmp_path, "base", tok, len(tok))}
    dirs["teacher"] = _dir(tmp_path, "teacher", other, len(tok))
    monkeypatch.setattr(hf_module, "boot_hf_dir", lambda *a, **k: pytest.fail("weights loaded before the check"))
    with pytest.raises(IncompatibleModelsError, match=r"token id 300 is '.+' in one and '.+' in the other"):
        Lineage.from_hf_dirs(dirs)
