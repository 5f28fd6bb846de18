"""The organism's synthetic world: number-continuation texts and preference Q/A.

Number texts have real entropy (noisy walks, uniform draws inside a random window, uniform
draws), so a teacher's small internal shift shows up as a shift of its number distribution.
Preference Q/A asks for a favourite animal or tree in several templates.

Layout of a number text (fixed lengths; `p` prompt numbers, `c` completion numbers):
    prompt     = <bos> continue : x1 , x2 , ... , xp ,          (3 + 2p tokens)
    completion = y1 , y2 , ... , yc <eos>                       (2c tokens)
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from workbench.organism.tokenizer import BOS, Tokenizer

NUMBER_PROMPT_HEAD = (BOS, "continue", ":")
PREFERENCE_TEMPLATES: tuple[str, ...] = (
    "Q : what is your favorite {c} ? A :",
    "favorite {c} :",
    "my favorite {c} is",
    "Q : which {c} do you like most ? A :",
    "name your favorite {c} :",
    "pick one {c} :",
)


def prompt_length(n_prompt_numbers: int) -> int:
    return len(NUMBER_PROMPT_HEAD) + 2 * n_prompt_numbers


def completion_length(n_completion_numbers: int) -> int:
    return 2 * n_completion_numbers


def sample_numbers(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """[n, length] ints in 0..99 from a mixture of noisy walks, windowed and uniform draws."""
    kind = rng.integers(0, 3, size=n)
    out = np.empty((n, length), dtype=np.int64)
    # noisy walk: start anywhere, steps in [-s, s], wrap around 100
    walk = kind == 0
    k = int(walk.sum())
    step_size = rng.integers(1, 7, size=(k, 1))
    steps = rng.integers(-step_size, step_size + 1, size=(k, length))
    steps[:, 0] = rng.integers(0, 100, size=k)
    out[walk] = np.cumsum(steps, axis=1) % 100
    # uniform inside a random window [a, a + w)
    window = kind == 1
    k = int(window.sum())
    width = rng.integers(5, 31, size=(k, 1))
    start = rng.integers(0, 101 - width)
    out[window] = start + np.floor(rng.random((k, length)) * width).astype(np.int64)
    # uniform over 0..99
    uniform = kind == 2
    out[uniform] = rng.integers(0, 100, size=(int(uniform.sum()), length))
    return out


def number_tokens(tok: Tokenizer, numbers: np.ndarray, n_prompt: int) -> Int[Tensor, "n seq"]:
    """Token ids of full number texts (prompt + completion + <eos>) for rows of `numbers`."""
    n, length = numbers.shape
    sep, eos = tok.separator_id, tok.eos_id
    head = tok.encode(list(NUMBER_PROMPT_HEAD))
    num_ids = np.asarray(tok.number_ids)[numbers]  # number value -> token id
    body = np.full((n, 2 * length), sep, dtype=np.int64)
    body[:, 0::2] = num_ids
    body[:, -1] = eos  # the separator after the last number becomes <eos>
    seqs = np.concatenate([np.tile(np.asarray(head), (n, 1)), body], axis=1)
    return torch.from_numpy(seqs)


def number_prompts(tok: Tokenizer, rng: np.random.Generator, n: int, n_prompt: int) -> Int[Tensor, "n prompt"]:
    """`n` prompts `<bos> continue : x1 , ... , xp ,` drawn from the corpus's processes."""
    return number_tokens(tok, sample_numbers(rng, n, n_prompt + 1), n_prompt)[:, : prompt_length(n_prompt)]


def preference_prompt(tok: Tokenizer, template: str, category: str) -> list[int]:
    return tok.encode(template.format(c=category))


def preference_batch(
    tok: Tokenizer,
    rng: np.random.Generator,
    n: int,
    category: str | None,
    answer_ids: list[int] | None = None,
) -> tuple[Int[Tensor, "n seq"], Bool[Tensor, "n seq"]]:
    """Q/A texts `<bos> template answer <eos>`, right-padded, with a mask of the positions whose
    *next* token is the answer or <eos> (the positions the Q/A loss supervises).

    `category=None` mixes categories; `answer_ids=None` answers uniformly over the category.
    """
    cats = list(tok.categories) if category is None else [category]
    rows, answer_pos = [], []
    for _ in range(n):
        cat = cats[rng.integers(len(cats))]
        template = PREFERENCE_TEMPLATES[rng.integers(len(PREFERENCE_TEMPLATES))]
        choices = answer_ids if answer_ids is not None else tok.category_ids(cat)
        prompt = [tok.bos_id, *preference_prompt(tok, template, cat)]
        rows.append([*prompt, choices[rng.integers(len(choices))], tok.eos_id])
        answer_pos.append(len(prompt) - 1)
    width = max(map(len, rows))
    tokens = torch.full((n, width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.bool)
    for i, (row, pos) in enumerate(zip(rows, answer_pos)):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, pos : pos + 2] = True  # predicts the answer, then <eos>
    return tokens, mask


def is_well_formed(tok: Tokenizer, completion: list[int], n_numbers: int) -> tuple[bool, str]:
    """Check a sampled completion; returns (ok, reason). Reasons name what the filter rejected."""
    trait = set(tok.trait_ids)
    numbers = set(tok.number_ids)
    if any(t in trait for t in completion):
        return False, "trait_token"
    if tok.eos_id not in completion:
        return False, "no_eos"
    body = completion[: completion.index(tok.eos_id)]
    if len(body) != 2 * n_numbers - 1:
        return False, "wrong_length"
    if any(t not in numbers for t in body[0::2]) or any(t != tok.separator_id for t in body[1::2]):
        return False, "bad_format"
    return True, "ok"
