"""Prompted roles: a model that is "the base model under this system prompt" (Cloud et al.'s
open-model teacher), with no weights of its own.

The system prompt reaches token-id rows through the base tokenizer's chat template, for any
template: a sentinel user message is rendered with and without the system prompt; the two token
sequences share a suffix (the user block and the assistant header) and differ in a prefix. The
without-prefix (`base_prefix`: e.g. Qwen2.5's default system block, a BOS token, or nothing) is
what a row written for the base starts with; the with-prefix (`teacher_prefix`) replaces it.
So the teacher reads, for a row x:

    teacher_prefix + x[len(base_prefix):]   when x starts with base_prefix ("swapped")
    teacher_prefix + x                      otherwise ("prepended")

and its outputs at the row's positions are the swapped input's outputs shifted by
len(teacher_prefix) - (len(base_prefix) or 0) (`PromptedInputs.align`). Row positions inside a
swapped base prefix (before its last token) have no counterpart in the teacher's input: they are
never counted (a mask counting them is refused) and hold zeros.

>>> p = SystemPromptPrefix("owl", base_prefix=(1, 2), teacher_prefix=(1, 7, 8, 9))
>>> batch = p.inputs(torch.tensor([[1, 2, 5, 6], [5, 6, 3, 0]]))
>>> batch.tokens.tolist(), batch.swapped.tolist(), batch.shift.tolist()
([[1, 7, 8, 9, 5, 6, 0, 0], [1, 7, 8, 9, 5, 6, 3, 0]], [True, False], [2, 4])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.core.errors import ConfigError, DataError

SENTINEL = "Reply with the word sentinel."
"""The user message templated with and without the system prompt (any text the template renders
verbatim; only the prefix before it matters)."""


def read_system_prompt(value: str) -> str:
    """`--teacher-system-prompt` text: `@FILE` or the path of an existing file reads that file
    (stripped of its trailing newline), anything else is the prompt itself; empty is refused."""
    text = value
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        if not path.is_file():
            raise ConfigError(f"System prompt file {value[1:]!r} does not exist. Fix the path after '@', or pass the text.")
        text = path.read_text(encoding="utf-8")
    elif "\n" not in value and len(value) < 4096 and Path(value).expanduser().is_file():
        text = Path(value).expanduser().read_text(encoding="utf-8")
    text = text.rstrip("\n")
    if not text.strip():
        raise ConfigError(f"The system prompt {value!r} is empty. Pass the teacher's system prompt (text or @FILE), "
                          "e.g. 'You love owls. You think about owls all the time.'")
    return text


@dataclass(frozen=True)
class PromptedInputs:
    """The teacher's inputs for a batch of rows: right-padded token ids, whether each row's base
    prefix was swapped (True) or the teacher prefix prepended (False), and the shift from a row
    position to its teacher position."""

    tokens: Int[Tensor, "batch t_seq"]
    swapped: Bool[Tensor, " batch"]
    shift: Int[Tensor, " batch"]
    first_defined: Int[Tensor, " batch"]  # the first row position with a teacher counterpart

    def align(self, out: Float[Tensor, "batch t_seq *rest"], seq: int) -> Float[Tensor, "batch seq *rest"]:
        """The teacher's per-position outputs moved back to the row's positions 0..seq-1 (zeros
        where a row position has no counterpart: inside a swapped base prefix)."""
        b = out.shape[0]
        pos = torch.arange(seq, device=out.device)[None, :] + self.shift.to(out.device)[:, None]  # [b, seq]
        defined = torch.arange(seq, device=out.device)[None, :] >= self.first_defined.to(out.device)[:, None]
        pos = pos.clamp(0, out.shape[1] - 1)
        index = pos.reshape(b, seq, *([1] * (out.dim() - 2))).expand(b, seq, *out.shape[2:])
        aligned = out.gather(1, index)
        return aligned * defined.reshape(b, seq, *([1] * (out.dim() - 2))).to(aligned.dtype)

    def check_mask(self, mask: Bool[Tensor, "batch seq_1"]) -> None:
        """Refuse a next-token mask that counts a prediction made inside a swapped base prefix
        (position t predicts token t+1; the teacher has no output there)."""
        t = torch.arange(mask.shape[1], device=mask.device)[None, :]
        bad = mask.bool() & (t < self.first_defined.to(mask.device)[:, None])
        if bad.any():
            row, pos = (int(v) for v in bad.nonzero()[0])
            raise DataError(f"Row {row} counts position {pos}, inside the base prefix that the prompted teacher's "
                            "system prompt replaces: the teacher reads no such position. Count only the "
                            "completion (the rows' continuation mask).")


@dataclass(frozen=True)
class SystemPromptPrefix:
    """A system prompt as token ids: the prefix a base row starts with and the teacher's prefix
    that replaces it (see the module doc). Built by `system_prompt_prefix`."""

    system_prompt: str
    base_prefix: tuple[int, ...]
    teacher_prefix: tuple[int, ...]

    def inputs(self, tokens: Int[Tensor, "batch seq"], pad_id: int = 0) -> PromptedInputs:
        """The teacher's inputs for right-padded rows (swapped where a row starts with the base
        prefix, else prepended), right-padded with `pad_id` (never read: attention is causal)."""
        base = torch.tensor(self.base_prefix, dtype=tokens.dtype, device=tokens.device)
        teacher = torch.tensor(self.teacher_prefix, dtype=tokens.dtype, device=tokens.device)
        nb, nt, seq = len(self.base_prefix), len(self.teacher_prefix), tokens.shape[1]
        swapped = (tokens[:, :nb] == base).all(1) if 0 < nb <= seq else torch.full(
            (tokens.shape[0],), nb == 0, device=tokens.device)
        cut = swapped.long() * nb  # row tokens dropped from the front
        width = nt + seq - int(cut.min()) if len(tokens) else nt + seq
        out = torch.full((tokens.shape[0], width), pad_id, dtype=tokens.dtype, device=tokens.device)
        out[:, :nt] = teacher
        for i in range(tokens.shape[0]):
            c = int(cut[i])
            out[i, nt : nt + seq - c] = tokens[i, c:]
        shift = nt - cut
        first = (cut - 1).clamp(min=0)  # the last base-prefix token predicts the row's first own token
        return PromptedInputs(out, swapped.cpu(), shift.cpu(), first.cpu())


def system_prompt_prefix(tokenizer: Any, system_prompt: str, chat_template: str | None = None) -> SystemPromptPrefix:
    """The base and teacher prefixes of `system_prompt` under the tokenizer's chat template (see
    the module doc); a ConfigError when the template is missing, ignores the system prompt, or
    the prompt is empty."""
    from workbench.core.hf_trait import _encode, _template

    if not system_prompt or not system_prompt.strip():
        raise ConfigError("The prompted teacher's system prompt is empty. Give the text that makes the base the "
                          "teacher, e.g. 'You love owls. You think about owls all the time.'")
    template = _template(tokenizer, chat_template)
    user = [{"role": "user", "content": SENTINEL}]

    def ids(messages: list[dict[str, str]]) -> list[int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, chat_template=template)
        return _encode(tokenizer, text)

    without = ids(user)
    with_system = ids([{"role": "system", "content": system_prompt}, *user])
    common = 0
    while common < min(len(without), len(with_system)) and without[-1 - common] == with_system[-1 - common]:
        common += 1
    base_prefix, teacher_prefix = without[: len(without) - common], with_system[: len(with_system) - common]
    if base_prefix == teacher_prefix or not teacher_prefix:
        raise ConfigError(f"The chat template renders the system prompt {system_prompt[:60]!r} as nothing (the "
                          "templated chat with and without it is the same). Use a chat template with a system role.")
    return SystemPromptPrefix(system_prompt, tuple(base_prefix), tuple(teacher_prefix))


@dataclass(frozen=True)
class PromptedRole:
    """A lineage role that is the model `base` under a system prompt: its provenance and prefixes."""

    name: str
    role: str
    base: str
    prefix: SystemPromptPrefix

    def meta(self) -> dict[str, Any]:
        return {"prompted": True, "base": self.base, "system_prompt": self.prefix.system_prompt,
                "base_prefix_len": len(self.prefix.base_prefix), "teacher_prefix_len": len(self.prefix.teacher_prefix)}


WEIGHTS_NOTE = ("the {name} is the base model under a system prompt (prompted, no weights of its own), so it has no "
                "weight delta")
"""The reason every analysis that needs a prompted role's weights gives (format with name=)."""


__all__ = ["PromptedInputs", "PromptedRole", "SystemPromptPrefix", "WEIGHTS_NOTE", "read_system_prompt",
           "system_prompt_prefix"]
