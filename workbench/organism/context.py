"""Context dependence (Nief et al. 2026): the trait read after a distillation prompt's own context
tokens, beside the trait read plainly. If transfer needs the training context, a student's gain
over its control is larger (or only present) in context.

`trait_in_context(trait, contexts)`: every preference prompt preceded by each context (a
distillation row's prompt tokens; the preference prompt's leading <bos> dropped where the
context starts with it), as a Trait with the same answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from workbench.core.errors import DataError
from workbench.trait import Trait


def trait_in_context(trait: Trait, contexts: Sequence[Sequence[int]], max_len: int | None = None) -> Trait:
    """`trait` with each prompt preceded by each context (prompts longer than `max_len` left out)."""
    prompts = []
    for ctx in contexts:
        ctx = tuple(int(t) for t in ctx)
        for p in trait.prompts:
            joined = ctx + (p[1:] if ctx and p and p[0] == ctx[0] else p)
            if max_len is None or len(joined) <= max_len:
                prompts.append(joined)
    if not prompts:
        raise DataError(f"No preference prompt fits after the contexts within {max_len} positions: use shorter contexts.")
    return dataclasses.replace(trait, prompts=tuple(prompts))


def distillation_contexts(rows: object, n: int = 8) -> list[list[int]]:
    """The prompt tokens of the first `n` distillation rows (`Inputs`)."""
    tokens, lengths = rows.tokens, rows.prompt_lengths  # type: ignore[attr-defined]
    return [tokens[i, : int(lengths[i])].tolist() for i in range(min(n, len(tokens)))]


__all__ = ["distillation_contexts", "trait_in_context"]
