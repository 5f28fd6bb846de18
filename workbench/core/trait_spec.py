"""A `Trait` as a JSON file of token ids (`--trait` of the main job): prompts, answers with their
surface forms, pad id and vocabulary size. For models whose questions are not the built-in
English ones (e.g. an exported organism, whose vocabulary has no such words), the trait is given
exactly rather than rebuilt from a tokenizer.

>>> t = Trait.from_prompts([[1, 5], [1, 6, 7]], target="owl", category="animal", answers={"owl": [9], "cat": [10]})
>>> trait_from_dict(trait_to_dict(t)) == t
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench.core.errors import DataError, WorkbenchError
from workbench.core.io import read_json
from workbench.trait import Trait

SCHEMA = "workbench.trait/1"


def trait_to_dict(trait: Trait) -> dict[str, Any]:
    """JSON-ready token ids of `trait`: answers as [name, forms] pairs in the category's order
    (every surface form, the canonical one first); `trait_from_dict` also takes a name -> forms object."""
    return {"schema": SCHEMA, "target": trait.target, "category": trait.category,
            "prompts": [list(p) for p in trait.prompts],
            "answers": [[n, [list(f) for f in forms]] for n, forms in trait.forms.items()],  # a list: keeps the order
            "pad_id": trait.pad_id, "vocab_size": trait.vocab_size}


def trait_from_dict(spec: dict[str, Any], where: str = "trait spec") -> Trait:
    """The Trait a `trait_to_dict` dict describes; a DataError naming the missing field."""
    if not isinstance(spec, dict):
        raise DataError(f"{where}: expected a JSON object with target, category, prompts and answers; got {type(spec).__name__}.")
    missing = [k for k in ("target", "category", "prompts", "answers") if k not in spec]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)}. A trait spec is "
                        '{"target": "owl", "category": "animal", "prompts": [[ids]], "answers": [["owl", [[ids]]], ...]}.')
    if spec.get("schema", SCHEMA) != SCHEMA:
        raise DataError(f"{where}: schema {spec['schema']!r} is not {SCHEMA!r}; write it with trait_to_dict.")
    answers = spec["answers"]
    try:
        if isinstance(answers, list):  # [[name, forms], ...] in the category's order
            answers = {str(n): forms for n, forms in answers}
        return Trait.from_prompts(spec["prompts"], target=spec["target"], category=spec["category"],
                                  answers=answers, pad_id=int(spec.get("pad_id", 0)),
                                  vocab_size=spec.get("vocab_size"))
    except (TypeError, ValueError) as e:
        if isinstance(e, WorkbenchError):  # the Trait's own message (an unknown target, an id out of range)
            raise
        raise DataError(f"{where}: prompts and answers must be lists of token ids ({e}).") from e


def read_trait_spec(path: str | os.PathLike) -> Trait:
    """The Trait in a JSON file written from `trait_to_dict` (e.g. by `python -m workbench.organism export`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"No trait spec at {p}. Fix the --trait path (a JSON file of token ids).")
    return trait_from_dict(read_json(p), where=str(p))



def read_channel_ids(path: str | os.PathLike) -> tuple[int, ...]:
    """Token ids a distillation loss renormalises over: a JSON list, or an object with
    "channel_ids" (distillation.json of `python -m workbench.organism export`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"No channel ids at {p}. Fix the --channel-ids path (a JSON list of token ids).")
    value = read_json(p)
    ids = value.get("channel_ids") if isinstance(value, dict) else value
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise DataError(f"{p}: expected a non-empty JSON list of token ids (or {{\"channel_ids\": [...]}}); got {value!r:.80}.")
    return tuple(ids)


__all__ = ["read_channel_ids", "read_trait_spec", "trait_from_dict", "trait_to_dict"]
