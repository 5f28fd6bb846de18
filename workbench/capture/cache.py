"""Activations the probe job reads, once per (model, inputs, hooks, positions), kept in memory.

`ActivationReader.pooled` gives one vector per row and hook (mean over the continuation
positions, over all tokens, or the last token), `log_prob` the summed log-probability of each
row's continuation (for the likelihood-ratio oracle; taken from the same forward pass), and
`last_token` the activations at a given position of short prompts (trait directions).

`ContrastPrompts` are the prompts trait directions are fitted on: `<bos> template answer`
rows labelled by whether the answer names the target.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.core.errors import DataError
from workbench.core.inputs import Inputs
from workbench.analyses.probes import sequence_log_probs

if TYPE_CHECKING:
    from workbench.core.lineage import Lineage
    from workbench.trait import Trait


@dataclass
class ContrastPrompts:
    """Right-padded prompts, the index of the position read in each, and a label per row.

    `question_len[i]` is the length of row i without its answer (`questions()` reads there).
    """

    tokens: Int[Tensor, "n pos"]
    last: Int[Tensor, " n"]
    labels: Bool[Tensor, " n"]
    question_len: Int[Tensor, " n"] | None = None
    label: str = "prompts"  # name of the activation store these prompts are captured into

    def inputs(self) -> Inputs:
        """The prompts as Inputs (no completion), read at their last token."""
        rows = [row[: int(n) + 1] for row, n in zip(self.tokens.tolist(), self.last.tolist())]
        return Inputs.from_sequences(rows, [[] for _ in rows], sources=self.label, prompt_ids=list(range(len(rows))),
                                     mask="all")

    def questions(self) -> ContrastPrompts:
        """The distinct prompts without their answers, read at their last token."""
        if self.question_len is None:
            return self
        seen: dict[tuple[int, ...], None] = {}
        for row, n in zip(self.tokens.tolist(), self.question_len.tolist()):
            seen.setdefault(tuple(row[:n]), None)
        out = _pad(list(seen), [False] * len(seen))
        out.label = f"{self.label}-questions"
        return out


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


def contrast_prompts(trait: Trait) -> ContrastPrompts:
    """`prompt answer` for every prompt of the trait and every answer of its category; label
    True where the answer is the target."""
    rows, labels, qlen = [], [], []
    for question in trait.prompts:
        for answer, ids in trait.answers:
            rows.append([*question, *ids])
            labels.append(answer == trait.target)
            qlen.append(len(question))
    return _pad(rows, labels, qlen, trait.pad_id)


def read_contrast_prompts(path: str | os.PathLike) -> ContrastPrompts:
    """JSONL rows {"tokens": [ids], "label": 0|1[, "question_len": int]}."""
    from pathlib import Path

    from workbench.core.inputs import _read_lines
    from workbench.core.schemas import ContrastRow, validate

    path = Path(path)
    if not path.is_file():
        raise DataError(f"No prompts file at {path}. Fix the --prompts path.")
    rows, labels, qlen = [], [], []
    for lineno, r in _read_lines(path, None):  # invalid UTF-8 or JSON: DataError naming the line
        row = validate(ContrastRow, r, f"{path}:{lineno}",
                       fix='Each row is {"tokens": [ids], "label": 0|1[, "question_len": int]}: fix the file.')
        rows.append(list(row.tokens))
        labels.append(bool(row.label))
        qlen.append(row.question_len if row.question_len is not None else len(row.tokens))
    return _pad(rows, labels, qlen)


def _with_positions(inputs: Inputs, positions: str) -> tuple[Inputs, str]:
    """The Inputs and capture position rule of a job position mode."""
    if positions == "continuation":
        return inputs, "mean"
    if positions == "all":
        return replace(inputs, mask=inputs.attention_mask), "mean"
    if positions == "last":
        return inputs, "last"
    raise DataError(f"positions={positions!r}; use continuation, all or last.")


class ReadSettings(Protocol):
    """How activations are read: which hooks, which positions of each row ("continuation", "all"
    or "last"), rows per forward pass, and whether to show progress. `ProbesConfig`,
    `DirectionsConfig` and the main job's `JobConfig` are such settings."""

    hooks: list[str]
    positions: str
    batch_size: int
    progress: bool


@dataclass
class ActivationReader:
    """Activations read through `workbench.capture` into stores under `directory` (one per set
    of inputs, reused across sections and reruns), plus continuation log-probs kept in memory.
    Analyses that read activations (`fit_probes`, `trait_directions`, the main job's sections)
    share one reader so each model's activations are captured once.

    directory: where the activation stores go (None: a temporary directory).
    roles: models captured together on first use (more are added when asked for).
    """

    directory: str | os.PathLike | None = None
    roles: tuple[str, ...] = ()
    memo: dict[tuple, Any] = field(default_factory=dict)

    def _dir(self) -> Path:
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="workbench-acts-")
        return Path(self.directory)

    def _store(self, lineage: Lineage, label: str, inputs: Inputs, rule: str, name: str, config: ReadSettings) -> Any:
        from workbench.capture.capture import capture

        key = ("store", label, inputs.content_hash(), tuple(config.hooks), rule)
        store = self.memo.get(key)
        if store is None or name not in store.models:
            have = tuple(store.models) if store is not None else ()
            roles = [m for m in (*lineage.names, *lineage.prompted) if m in {*self.roles, *have, name}]
            store = capture(lineage, inputs, config.hooks, rule, roles, out_dir=self._dir() / label,
                            batch_size=config.batch_size, overwrite=True, progress=config.progress)
            self.memo[key] = store
        return store

    def pooled(self, lineage: Lineage, name: str, inputs: Inputs, config: ReadSettings) -> dict[str, Float[Tensor, "n d"]]:
        """One vector per row and hook: the job's position mode applied to `name`'s activations."""
        x, rule = _with_positions(inputs, config.positions)
        store = self._store(lineage, f"data-{config.positions}", x, rule, name, config)
        return {h: store.read(name, h, dtype=torch.float32) for h in config.hooks}

    def data_store(self, lineage: Lineage, inputs: Inputs, config: ReadSettings) -> Any:
        """The activation store of the job's rows with every model in `roles` (for store-based analyses)."""
        x, rule = _with_positions(inputs, config.positions)
        first = next((m for m in (*lineage.names, *lineage.prompted) if m in self.roles), lineage.names[0])
        return self._store(lineage, f"data-{config.positions}", x, rule, first, config)

    def last_token(self, lineage: Lineage, name: str, prompts: ContrastPrompts, config: ReadSettings) -> dict[str, Float[Tensor, "n d"]]:
        """Activations at the last token of each prompt."""
        store = self._store(lineage, prompts.label, prompts.inputs(), "last", name, config)
        return {h: store.read(name, h, dtype=torch.float32) for h in config.hooks}

    def log_prob(self, lineage: Lineage, name: str, inputs: Inputs, config: ReadSettings) -> Float[Tensor, " n"]:
        """Summed log-probability of each row's continuation under `name` (for the oracle); a
        prompted role's through the teacher seam (`engines.teacher.prompted_logits`: its base on
        the system-prompted rows)."""
        from workbench.engines.teacher import prompted_logits

        key = ("logp", name, inputs.content_hash())
        if key not in self.memo:
            role = lineage.prompted[name] if lineage.is_prompted(name) else None
            model = lineage[role.base] if role is not None else lineage[name]
            out = []
            with torch.inference_mode():
                for batch in inputs.batches(config.batch_size):
                    batch = batch.to(lineage.device)
                    logits = model(batch.tokens) if role is None else prompted_logits(
                        model, role, batch.tokens, lineage.n_ctx, batch.mask[:, 1:], batch.pad_id)
                    out.append(sequence_log_probs(logits, batch.tokens, batch.mask).cpu())
            self.memo[key] = torch.cat(out)
        return self.memo[key]
