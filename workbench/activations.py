"""Activations the probe job reads, once per (model, inputs, hooks, positions), kept in memory.

`ActivationCache.pooled` gives one vector per row and hook (mean over the continuation
positions, over all tokens, or the last token), `log_prob` the summed log-probability of each
row's continuation (for the likelihood-ratio oracle; taken from the same forward pass), and
`last_token` the activations at a given position of short prompts (trait directions).

`ContrastPrompts` are the prompts trait directions are fitted on: `<bos> template answer`
rows labelled by whether the answer names the target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.errors import DataError
from workbench.linear_probes import sequence_log_probs

if TYPE_CHECKING:
    from workbench.lineage import Lineage


@dataclass
class ContrastPrompts:
    """Right-padded prompts, the index of the position read in each, and a label per row.

    `question_len[i]` is the length of row i without its answer (`questions()` reads there).
    """

    tokens: Int[Tensor, "n pos"]
    last: Int[Tensor, " n"]
    labels: Bool[Tensor, " n"]
    question_len: Int[Tensor, " n"] | None = None

    def questions(self) -> ContrastPrompts:
        """The distinct prompts without their answers, read at their last token."""
        if self.question_len is None:
            return self
        seen: dict[tuple[int, ...], None] = {}
        for row, n in zip(self.tokens.tolist(), self.question_len.tolist()):
            seen.setdefault(tuple(row[:n]), None)
        return _pad(list(seen), [False] * len(seen))


def _pad(rows: list[list[int] | tuple[int, ...]], labels: list[bool], question_len: list[int] | None = None,
         pad_id: int = 0) -> ContrastPrompts:
    if not rows:
        raise DataError("No contrastive prompts; give at least one row.")
    width = max(map(len, rows))
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return ContrastPrompts(tokens, torch.tensor([len(r) - 1 for r in rows]), torch.tensor(labels, dtype=torch.bool),
                           None if question_len is None else torch.tensor(question_len))


def organism_preference_prompts(tok: Any, target: str) -> ContrastPrompts:
    """`<bos> template answer` for every preference template and every answer of the target's
    category; label True where the answer is the target."""
    from workbench.organism.corpus import PREFERENCE_TEMPLATES, preference_prompt

    category = tok.category_of(target)
    rows, labels, qlen = [], [], []
    for template in PREFERENCE_TEMPLATES:
        question = [tok.bos_id, *preference_prompt(tok, template, category)]
        for answer in tok.categories[category]:
            rows.append([*question, tok.token_id(answer)])
            labels.append(answer == target)
            qlen.append(len(question))
    return _pad(rows, labels, qlen, tok.pad_id)


def read_contrast_prompts(path: str | os.PathLike) -> ContrastPrompts:
    """JSONL rows {"tokens": [ids], "label": 0|1[, "question_len": int]}."""
    import json
    from pathlib import Path

    from workbench.inputs import _ids

    path = Path(path)
    if not path.is_file():
        raise DataError(f"No prompts file at {path}. Fix the --prompts path.")
    rows, labels, qlen = [], [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            rows.append(_ids(r["tokens"], lineno, "tokens"))
            labels.append(bool(r["label"]))
            qlen.append(int(r.get("question_len", len(r["tokens"]))))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f'{path}:{lineno}: expected {{"tokens": [ids], "label": 0|1}} ({e}).') from e
    return _pad(rows, labels, qlen)


def _positions_mask(inputs: Any, positions: str) -> Bool[Tensor, "n pos"]:
    if positions == "continuation":
        return inputs.mask
    if positions == "all":
        return inputs.attention_mask
    if positions == "last":
        last = inputs.attention_mask.sum(1) - 1
        return torch.nn.functional.one_hot(last, inputs.tokens.shape[1]).bool()
    raise DataError(f"positions={positions!r}; use continuation, all or last.")


@dataclass
class ActivationCache:
    """In-memory activations keyed by (model, inputs hash, hooks, positions)."""

    store: dict[tuple, Any] = field(default_factory=dict)

    def _forward(self, lineage: Lineage, name: str, inputs: Any, config: Any) -> tuple[dict[str, Tensor], Tensor]:
        key = (name, inputs.content_hash(), tuple(config.hooks), config.positions)
        if key in self.store:
            return self.store[key]
        model = lineage[name]
        hooks = set(config.hooks)
        dev = lineage.device
        pooled: dict[str, list[Tensor]] = {h: [] for h in config.hooks}
        logps = []
        with torch.inference_mode():
            for batch in inputs.batches(config.batch_size):
                batch = batch.to(dev)
                logits, cache = model.run_with_cache(batch.tokens, names_filter=lambda n: n in hooks)
                weights = _positions_mask(batch, config.positions).to(torch.float32)
                weights = weights / weights.sum(1, keepdim=True).clamp(min=1)
                for h in config.hooks:
                    pooled[h].append(torch.einsum("npd,np->nd", cache[h].float(), weights).cpu())
                logps.append(sequence_log_probs(logits, batch.tokens, batch.mask).cpu())
        out = ({h: torch.cat(v) for h, v in pooled.items()}, torch.cat(logps))
        self.store[key] = out
        return out

    def pooled(self, lineage: Lineage, name: str, inputs: Any, config: Any) -> dict[str, Float[Tensor, "n d"]]:
        return self._forward(lineage, name, inputs, config)[0]

    def log_prob(self, lineage: Lineage, name: str, inputs: Any, config: Any) -> Float[Tensor, " n"]:
        return self._forward(lineage, name, inputs, config)[1]

    def last_token(self, lineage: Lineage, name: str, tokens: Int[Tensor, "n pos"], last: Int[Tensor, " n"],
                   config: Any) -> dict[str, Float[Tensor, "n d"]]:
        key = ("last", name, tokens.numpy().tobytes(), tuple(tokens.shape), tuple(last.tolist()), tuple(config.hooks))
        if key not in self.store:
            hooks = set(config.hooks)
            with torch.inference_mode():
                _, cache = lineage[name].run_with_cache(tokens.to(lineage.device), names_filter=lambda n: n in hooks)
            rows = torch.arange(len(last))
            self.store[key] = {h: cache[h][rows, last.to(cache[h].device)].float().cpu() for h in config.hooks}
        return self.store[key]
