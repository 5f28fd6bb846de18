"""The organism's traits: `<bos> template` prompts of its preference templates, answered by one
word of a category (e.g. "owl" among the animals), as `workbench.trait.Trait` values.

>>> tok = Tokenizer.default()
>>> trait = organism_trait(tok, "owl")
>>> trait.category, len(trait.prompts), tok.decode(trait.prompts[1]), trait.target_id == tok.token_id("owl")
('animal', 6, '<bos> favorite animal :', True)
"""

from __future__ import annotations

from jaxtyping import Int
from torch import Tensor

from workbench.organism.corpus import PREFERENCE_TEMPLATES, preference_prompt
from workbench.organism.tokenizer import Tokenizer
from workbench.core.inputs import Inputs
from workbench.trait import Trait


def preference_rows(tok: Tokenizer, category: str) -> list[list[int]]:
    """`<bos> template` token ids of every preference template for `category`."""
    return [[tok.bos_id, *preference_prompt(tok, t, category)] for t in PREFERENCE_TEMPLATES]


def organism_trait(tok: Tokenizer, target: str) -> Trait:
    """The Trait of `target` (a word of one of the tokenizer's categories; others are an error
    naming the valid ones)."""
    category = tok.category_of(target)
    return Trait.from_prompts(preference_rows(tok, category), target=target, category=category,
                              answers={w: [tok.token_id(w)] for w in tok.categories[category]},
                              pad_id=tok.pad_id, vocab_size=len(tok))


def category_traits(tok: Tokenizer, category: str) -> list[Trait]:
    """One Trait per answer of `category` (the rows of the organism's model x target matrix)."""
    return [organism_trait(tok, w) for w in tok.categories[category]]


def preference_tokens(tok: Tokenizer, category: str) -> tuple[Int[Tensor, "templates seq"], Int[Tensor, " templates"]]:
    """Right-padded `<bos> template` prompts of `category` and the index of each one's last token."""
    trait = organism_trait(tok, tok.categories[category][0])
    return trait.tokens, trait.answer_positions


def check_target(target: str) -> str:
    """`target` if the organism's vocabulary has it as a category answer; else an error naming the
    valid targets (a command checks this before any work)."""
    Tokenizer.default().category_of(target)
    return target


def preference_inputs(tok: Tokenizer) -> Inputs:
    """The trait-evaluation prompts of every category as Inputs (no completion; read them at
    their last position, the answer position)."""
    prompts, sources = [], []
    for category in tok.categories:
        for row in preference_rows(tok, category):
            prompts.append(row)
            sources.append(f"prompt:{category}")
    return Inputs.from_sequences(prompts, [[] for _ in prompts], sources, pad_id=tok.pad_id, mask="all")
