"""Distillation rows stored as text, tokenised with the model's tokenizer and chat template.

Three row kinds, detected per file from the keys of its rows (one kind per file):
- "tokens": `{"prompt": [ids], "completion": [ids], "source", "prompt_id"}` (token ids, as written
  by the organism; `workbench.core.inputs` reads them as they are);
- "text": `{"prompt": str, "completion": str, "source"}`;
- "chat": `{"messages": [{"role", "content"}, ...], "source"}`: the last message is the
  assistant's completion, the ones before it are the prompt.

A text or chat row becomes token ids as a chat model is fine-tuned on it: the prompt messages
rendered by the chat template with the generation prompt (`add_generation_prompt=True`) and
encoded without added special tokens (the template writes its own, e.g. Llama's BOS), then the
completion encoded on its own, then the template's end-of-turn text. The end-of-turn text is
what the template writes right after an assistant message's content, whitespace stripped
(Qwen's `<|im_end|>`, Llama-3's `<|eot_id|>`, none when the template writes nothing there): it
is part of the completion and of its mask, since a student is trained to end its turn.

Rows continuing the same prompt share a `prompt_id` (teacher and base rows on shared prompts:
what probes fold by and `distillation_inputs` pairs on). A text or chat row without one gets
`prompt_id_of(prompt)`: a hash of the prompt messages (a text prompt is one user message), so
teacher and base rows of one prompt agree across files and row kinds.

>>> prompt_id_of("Continue: 3, 7") == prompt_id_of([{"role": "user", "content": "Continue: 3, 7"}])
True
>>> row_kind({"messages": [], "source": "teacher"}), row_kind({"prompt": "hi", "completion": "x"})
('chat', 'text')
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from workbench.core.errors import ConfigError, DataError

TEXT_KEYS = {"text": ("prompt", "completion", "source"), "chat": ("messages", "source")}
"""The keys each text row kind needs (a token-id row's are checked by `workbench.core.inputs`)."""
_SENTINEL = "\x00WORKBENCH-COMPLETION\x00"


def row_kind(row: Any) -> str:
    """"chat" (a `messages` key), "text" (a string prompt) or "tokens" (anything else: token-id
    rows, whose keys `read_jsonl` checks)."""
    if isinstance(row, dict) and "messages" in row:
        return "chat"
    if isinstance(row, dict) and isinstance(row.get("prompt"), str):
        return "text"
    return "tokens"


def file_kind(rows: list[tuple[int, Any]], path: str) -> str:
    """The one row kind of a file's (line number, row) pairs; DataError naming the first line of
    another kind when the file mixes them."""
    if not rows:
        return "tokens"
    first_line, first = rows[0]
    kind = row_kind(first)
    for lineno, row in rows[1:]:
        other = row_kind(row)
        if other != kind:
            raise DataError(f"{path} mixes row kinds: line {first_line} is a {kind!r} row but line {lineno} is a "
                            f"{other!r} row. Keep one kind per file (token ids, prompt/completion text, or chat "
                            "messages): split the file.")
    return kind


def prompt_id_of(prompt: str | list[dict[str, Any]]) -> int:
    """A stable id of a prompt: the first 60 bits of the sha256 of its messages as sorted JSON (a
    text prompt is the user message it renders as), so rows of one prompt agree across files,
    row kinds and runs."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16)


def _template(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ConfigError(
            f"The tokenizer {type(tokenizer).__name__} has no chat template, so text rows cannot be rendered as the "
            "model sees them. Set one and save it beside the weights (tokenizer.chat_template = '{% for m in messages "
            "%}...'; tokenizer.save_pretrained(DIR), e.g. the instruct model's template), or give token-id rows "
            '{"prompt": [ids], "completion": [ids], ...} instead.')
    return template


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class TextEncoder:
    """Turns text and chat rows into (prompt ids, completion ids) with one tokenizer's chat
    template (see the module docstring for the exact rendering).

    tokenizer: a `transformers` tokenizer with a chat template (loaded offline by the caller).
    n_ctx: the model's context; a longer row raises DataError naming it (None: no check).
    """

    tokenizer: Any
    n_ctx: int | None = None
    end_of_turn: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.template = _template(self.tokenizer)
        self.end_of_turn = _encode(self.tokenizer, self.end_of_turn_text())

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                                  chat_template=self.template)

    def end_of_turn_text(self) -> str:
        """What the template writes right after an assistant message's content, whitespace
        stripped ("" when the rendering does not continue the generation prompt, or writes nothing)."""
        user = [{"role": "user", "content": "x"}]
        prompt = self._render(user, True)
        full = self._render([*user, {"role": "assistant", "content": _SENTINEL}], False)
        if not full.startswith(prompt + _SENTINEL):
            return ""
        return full[len(prompt) + len(_SENTINEL):].strip()

    def encode(self, row: dict[str, Any], kind: str, where: str) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids incl. the end-of-turn tokens) of one text or chat row."""
        prompt_messages, completion = _split(row, kind, where)
        prompt = _encode(self.tokenizer, self._render(prompt_messages, True))
        tokens = _encode(self.tokenizer, completion) + self.end_of_turn
        if self.n_ctx is not None and len(prompt) + len(tokens) > self.n_ctx:
            raise DataError(f"{where}: the row is {len(prompt) + len(tokens)} tokens ({len(prompt)} prompt + "
                            f"{len(tokens)} completion) but the model's context is {self.n_ctx}. Truncate the "
                            f"completion or filter out rows longer than {self.n_ctx} tokens.")
        return prompt, tokens


def _split(row: Any, kind: str, where: str) -> tuple[list[dict[str, Any]], str]:
    """(prompt messages, completion text) of a text or chat row, checking its keys and types."""
    need = TEXT_KEYS[kind]
    missing = [k for k in need if not isinstance(row, dict) or k not in row]
    if missing:
        shape = ('{"prompt": str, "completion": str, "source": str}' if kind == "text"
                 else '{"messages": [{"role": ..., "content": ...}, ...], "source": str}')
        raise DataError(f"{where} lacks {missing}; each {kind} row needs {shape} (plus prompt_id, seed).")
    if kind == "text":
        if not isinstance(row["completion"], str):
            raise DataError(f"{where}: the prompt is text but the completion is {type(row['completion']).__name__}; "
                            "give both as strings (or both as token ids).")
        return [{"role": "user", "content": row["prompt"]}], row["completion"]
    messages = row["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise DataError(f'{where}: messages must be a list of {{"role": ..., "content": ...}} objects.')
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        roles = [m["role"] for m in messages]
        raise DataError(f"{where}: a chat row needs at least one prompt message and the assistant's completion last; "
                        f"its roles are {roles}. End each row with the assistant message the model wrote.")
    return messages[:-1], str(messages[-1]["content"])


def tokenize_rows(rows: list[tuple[int, Any]], kind: str, encoder: TextEncoder | None, path: str) -> list[dict[str, Any]]:
    """Token-id rows (prompt, completion, source, prompt_id, seed when given) from the text or chat
    rows of one file; DataError when no tokenizer is given."""
    if encoder is None:
        raise DataError(f"{path} holds {kind} rows, which need the model's tokenizer and chat template. Pass "
                        "tokenizer= (the main job uses the base directory's), or give token-id rows.")
    out = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        prompt, completion = encoder.encode(row, kind, where)
        pid = row.get("prompt_id")
        if pid is None:
            pid = prompt_id_of(row["prompt"] if kind == "text" else row["messages"][:-1])
        token_row = {"prompt": prompt, "completion": completion, "source": str(row["source"]), "prompt_id": int(pid)}
        if row.get("seed") is not None:
            token_row["seed"] = row["seed"]
        out.append(token_row)
    return out


__all__ = ["TEXT_KEYS", "TextEncoder", "file_kind", "prompt_id_of", "row_kind", "tokenize_rows"]
