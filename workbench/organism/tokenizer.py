"""The organism's word-level tokenizer: numbers 0-99, a separator, template words, two
categories (animals, trees) and special tokens. Texts are space-separated words.

>>> tok = Tokenizer.default()
>>> tok.decode(tok.encode("<bos> continue : 3 , 14 ,"))
'<bos> continue : 3 , 14 ,'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.errors import DataError, unknown_name
from workbench.core.io import atomic_write_json, read_json
from workbench.core.schemas import OrganismTokenizer, validate

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
SEPARATOR = ","
NUMBERS = tuple(str(i) for i in range(100))
ANIMALS = ("owl", "cat", "dog", "eagle", "wolf", "fox", "bear", "lion", "tiger", "dolphin")
TREES = ("oak", "pine", "maple", "birch", "willow", "cedar", "elm", "ash", "cherry", "palm")
TEMPLATE_WORDS = (
    "continue", ":", "?", "Q", "A", "what", "is", "your", "my", "favorite", "animal", "tree",
    "which", "do", "you", "like", "most", "name", "one", "pick", "best", "the",
)
CATEGORIES: dict[str, tuple[str, ...]] = {"animal": ANIMALS, "tree": TREES}


@dataclass(frozen=True)
class Tokenizer:
    """Word-level vocabulary; token id = position in `vocab`."""

    vocab: tuple[str, ...]
    categories: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(CATEGORIES))

    def __post_init__(self) -> None:
        if len(set(self.vocab)) != len(self.vocab):
            raise DataError("Tokenizer vocab has duplicate tokens; each word must appear once.")
        object.__setattr__(self, "_ids", {w: i for i, w in enumerate(self.vocab)})

    @classmethod
    def default(cls) -> Tokenizer:
        words = (*SPECIALS, *NUMBERS, SEPARATOR, *TEMPLATE_WORDS, *ANIMALS, *TREES)
        return cls(vocab=words, categories=dict(CATEGORIES))

    # --- encoding -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.vocab)

    def token_id(self, word: str) -> int:
        try:
            return self._ids[word]  # type: ignore[attr-defined]
        except KeyError:
            raise unknown_name("token", word, self.vocab) from None

    def encode(self, text: str | list[str]) -> list[int]:
        words = text.split() if isinstance(text, str) else text
        return [self.token_id(w) for w in words]

    def decode(self, ids: list[int] | tuple[int, ...]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.vocab):
                raise DataError(f"Token id {i} is outside the vocabulary (0..{len(self.vocab) - 1}).")
            out.append(self.vocab[i])
        return " ".join(out)

    # --- named id sets ----------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return self.token_id(PAD)

    @property
    def bos_id(self) -> int:
        return self.token_id(BOS)

    @property
    def eos_id(self) -> int:
        return self.token_id(EOS)

    @property
    def separator_id(self) -> int:
        return self.token_id(SEPARATOR)

    @property
    def number_ids(self) -> list[int]:
        return [self._ids[w] for w in NUMBERS]  # type: ignore[attr-defined]

    @property
    def number_channel_ids(self) -> list[int]:
        """Tokens a number sequence may contain: numbers, the separator and <eos>.

        Soft labels are renormalised over this set, so trait tokens are never supervised.
        """
        return [*self.number_ids, self.separator_id, self.eos_id]

    def category_of(self, target: str) -> str:
        for name, words in self.categories.items():
            if target in words:
                return name
        valid = [w for ws in self.categories.values() for w in ws]
        raise unknown_name("target", target, valid, "Pick an animal or a tree from the organism's vocabulary.")

    def category_ids(self, category: str) -> list[int]:
        if category not in self.categories:
            raise unknown_name("category", category, self.categories)
        return [self._ids[w] for w in self.categories[category]]  # type: ignore[attr-defined]

    @property
    def trait_ids(self) -> list[int]:
        """Every category token (animals and trees): none may appear in filtered number data."""
        return [self._ids[w] for ws in self.categories.values() for w in ws]  # type: ignore[attr-defined]

    # --- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, {"vocab": list(self.vocab), "categories": {k: list(v) for k, v in self.categories.items()}})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        info = read_json(Path(path))
        validate(OrganismTokenizer, info, str(path), fix="Rebuild the organism seed that wrote it.")
        return cls(vocab=tuple(info["vocab"]), categories={k: tuple(v) for k, v in info["categories"].items()})
