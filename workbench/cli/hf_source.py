"""The trait and the text data of a job on Hugging Face directories: the base directory's own
tokenizer, loaded offline (never remote code), turned into a `Trait` by `hf_trait` (chat-templated
questions, multi-token answers with their surface forms) and used for text rows; the context
length its config.json gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.core.errors import ArtifactError
from workbench.core.hf_trait import hf_trait
from workbench.trait import Trait

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
"""Files one of which a directory holding a tokenizer has."""


GENERIC_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""tokenizer_class values of a tokenizer saved from a plain `tokenizers` object (no model-specific class)."""


def _saved_class(directory: Path) -> str | None:
    """The tokenizer_class tokenizer_config.json records (None when unreadable)."""
    import json

    try:
        return json.loads((directory / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None


def load_tokenizer(directory: str | Path) -> Any:
    """The tokenizer saved in `directory`, offline and without remote code; an ArtifactError
    naming the directory and the fix when it holds none."""
    d = Path(directory)
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
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


def context_length(directory: str | Path) -> int | None:
    """The context length config.json gives (`n_positions`, `max_position_embeddings` or `n_ctx`;
    None when it gives none), read before any weights load so that long text rows fail fast."""
    from workbench.core.hf_config import read_hf_config

    config = read_hf_config(str(directory), Path(directory))
    nested = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    for src in (config, nested):
        for key in ("n_positions", "max_position_embeddings", "n_ctx"):
            if isinstance(src.get(key), int):
                return int(src[key])
    return None


def hf_dir_trait(base_dir: str | Path, target: str, system_prompt: str | None = None) -> Trait:
    """The trait `target` (e.g. owl) asked with the base directory's tokenizer and chat template;
    `system_prompt` first in every question when given."""
    return hf_trait(load_tokenizer(base_dir), target, system_prompt=system_prompt)


__all__ = ["context_length", "hf_dir_trait", "load_tokenizer"]
