"""Tokenizers of local Hugging Face directories: loaded offline without remote code, and checked
equal across the models of a lineage before any weights load.

Token ids are what every analysis compares across models, so a student saved with another
vocabulary, other special tokens or another chat template would make the comparison silently
wrong. `check_same_tokenizers` names the first difference (a token id and its two strings, a
special token, the first differing character of the chat templates). Directories without a
tokenizer are left out of the check (the base's is the one the job reads).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.core.errors import ArtifactError, IncompatibleModelsError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
"""Files one of which a directory holding a tokenizer has."""

GENERIC_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""tokenizer_class values of a tokenizer saved from a plain `tokenizers` object (no model-specific class)."""

SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token")


def has_tokenizer(directory: str | Path) -> bool:
    """Whether `directory` holds tokenizer files."""
    return any((Path(directory) / f).is_file() for f in TOKENIZER_FILES)


def _saved_class(directory: Path) -> str | None:
    """The tokenizer_class tokenizer_config.json records (None when unreadable)."""
    try:
        return json.loads((directory / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None


def load_tokenizer(directory: str | Path) -> Any:
    """The tokenizer saved in `directory`, offline and without remote code; an ArtifactError
    naming the directory and the fix when it holds none."""
    d = Path(directory)
    if not has_tokenizer(d):
        raise ArtifactError(f"{d} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); the job builds the trait "
                            "from the base model's tokenizer. Save it beside the weights (tokenizer.save_pretrained(DIR)).")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # a tokenizer saved with the generic class loads as that class: AutoTokenizer would take the model
    # type's own class (e.g. Qwen2Tokenizer), which rebuilds another tokenizer from the files
    loader = PreTrainedTokenizerFast if _saved_class(d) in GENERIC_CLASSES else AutoTokenizer
    try:
        return loader.from_pretrained(str(d), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"Could not load the tokenizer in {d}: {e}. Save it with tokenizer.save_pretrained(DIR).") from e


def tokenizer_difference(a: Any, b: Any) -> str | None:
    """The first difference between two tokenizers (vocabulary, special tokens, chat template),
    in words; None when they agree."""
    va, vb = a.get_vocab(), b.get_vocab()
    if len(va) != len(vb):
        return f"vocabulary sizes differ ({len(va)} vs {len(vb)} tokens)"
    if va != vb:
        ia, ib = {i: t for t, i in va.items()}, {i: t for t, i in vb.items()}
        first = min(i for i in set(ia) | set(ib) if ia.get(i) != ib.get(i))
        return f"token id {first} is {ia.get(first)!r} in one and {ib.get(first)!r} in the other"
    for name in SPECIAL_TOKENS:
        sa, sb = getattr(a, name, None), getattr(b, name, None)
        if str(sa) != str(sb):
            return f"{name} differs ({sa!r} vs {sb!r})"
    ta, tb = getattr(a, "chat_template", None), getattr(b, "chat_template", None)
    if ta != tb:
        if ta is None or tb is None:
            return "one has a chat template and the other none"
        at = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        return f"chat templates differ from character {at} ({ta[at:at + 30]!r} vs {tb[at:at + 30]!r})"
    return None


def check_same_tokenizers(dirs: Mapping[str, str | Path]) -> None:
    """Refuse, before any weights load, directories whose tokenizers differ: the error names the
    two models, their directories and the first difference. Directories without one are skipped."""
    loaded = [(name, Path(d), load_tokenizer(d)) for name, d in dirs.items() if has_tokenizer(d)]
    if len(loaded) < 2:
        return
    ref_name, ref_dir, ref = loaded[0]
    for name, d, tok in loaded[1:]:
        diff = tokenizer_difference(ref, tok)
        if diff is not None:
            raise IncompatibleModelsError(
                f"The tokenizers of {ref_name!r} ({ref_dir}) and {name!r} ({d}) differ: {diff}. Token ids are "
                "compared across models, so every model must share one tokenizer: save the base's tokenizer beside "
                "each checkpoint (tokenizer.save_pretrained(DIR)), or remove a stale one. No weights were loaded."
            )


__all__ = ["TOKENIZER_FILES", "check_same_tokenizers", "has_tokenizer", "load_tokenizer", "tokenizer_difference"]
