"""The trait of a job on Hugging Face directories: the base directory's own tokenizer, loaded
offline (never remote code), turned into a `Trait` by `hf_trait` (chat-templated questions,
multi-token answers with their surface forms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.core.errors import ArtifactError
from workbench.core.hf_trait import hf_trait
from workbench.trait import Trait

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
"""Files one of which a directory holding a tokenizer has."""


def load_tokenizer(directory: str | Path) -> Any:
    """The tokenizer saved in `directory`, offline and without remote code; an ArtifactError
    naming the directory and the fix when it holds none."""
    d = Path(directory)
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
        raise ArtifactError(f"{d} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); the job builds the trait "
                            "from the base model's tokenizer. Save it beside the weights (tokenizer.save_pretrained(DIR)).")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(d), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"Could not load the tokenizer in {d}: {e}. Save it with tokenizer.save_pretrained(DIR).") from e


def hf_dir_trait(base_dir: str | Path, target: str, system_prompt: str | None = None) -> Trait:
    """The trait `target` (e.g. owl) asked with the base directory's tokenizer and chat template;
    `system_prompt` first in every question when given."""
    return hf_trait(load_tokenizer(base_dir), target, system_prompt=system_prompt)


__all__ = ["hf_dir_trait", "load_tokenizer"]
