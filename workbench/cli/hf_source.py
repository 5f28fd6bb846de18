"""The trait and the text data of a job on Hugging Face directories: the base directory's own
tokenizer, loaded offline (never remote code), turned into a `Trait` by `hf_trait` (chat-templated
questions, multi-token answers with their surface forms) and used for text rows; the context
length its config.json gives."""

from __future__ import annotations

from pathlib import Path

from workbench.core.hf_tokenizers import TOKENIZER_FILES, load_tokenizer
from workbench.core.hf_trait import hf_trait
from workbench.trait import Trait


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


__all__ = ["TOKENIZER_FILES", "context_length", "hf_dir_trait", "load_tokenizer"]
