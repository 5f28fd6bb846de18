"""`Inputs`: the one object for data, and the distillation-data JSONL it is read from.

Rows are right-padded token ids. `mask` marks the positions that count (by default the
completion tokens: position t is True when token t is a completion token, i.e. a target that
`logits[:, t - 1]` predicts; `next_token_mask()` gives that alignment). `prompt_ids` group
rows that continue the same prompt (teacher and base continuations share one id), so probes
can fold by prompt.

JSONL rows: `{"prompt": [ids], "completion": [ids], "source": str, "seed": int, "prompt_id": int}`, or
text rows (`{"prompt": str, "completion": str, ...}`, `{"messages": [...], ...}`) tokenised with a
tokenizer's chat template (`workbench.core.text_rows`).

>>> x = Inputs.from_sequences([[1, 2], [3]], [[4], [5, 6]], sources="teacher", pad_id=0)
>>> x.tokens.tolist(), x.mask.tolist()
([[1, 2, 4], [3, 5, 6]], [[False, False, True], [False, True, True]])
>>> x.prompt_lengths.tolist(), x.prompt_ids
([2, 1], [0, 1])
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from workbench.core.errors import DataError
from workbench.core.io import atomic_write_text
from workbench.core.schemas import check_rows
from workbench.core.text_rows import TextEncoder, file_kind, tokenize_rows

MaskMode = Literal["completion", "all"]


@dataclass(frozen=True)
class Inputs:
    """Right-padded token rows with the mask of positions that count and a label per row.

    tokens: token ids, right-padded with `pad_id`.
    mask: positions that count (completion tokens by default; all non-pad with mask="all").
    attention_mask: non-pad positions.
    prompt_lengths: number of prompt tokens per row.
    sources: where each row came from (e.g. "teacher", "base").
    prompt_ids: rows continuing the same prompt share an id (fold groups for probes).
    seeds: seed of the run that wrote each row, when known.
    pad_id: the padding token id.
    """

    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    attention_mask: Bool[Tensor, "batch pos"]
    prompt_lengths: Int[Tensor, " batch"]
    sources: list[str]
    prompt_ids: list[int]
    seeds: list[int | None] | None = None
    pad_id: int = 0

    def __post_init__(self) -> None:
        b = self.tokens.shape[0]
        if self.tokens.ndim != 2:
            raise DataError(f"tokens must be [batch, pos]; got shape {tuple(self.tokens.shape)}.")
        for name in ("mask", "attention_mask"):
            if getattr(self, name).shape != self.tokens.shape:
                raise DataError(
                    f"{name} has shape {tuple(getattr(self, name).shape)} but tokens "
                    f"{tuple(self.tokens.shape)}."
                )
        lengths = {
            "prompt_lengths": self.prompt_lengths.shape[0],
            "sources": len(self.sources),
            "prompt_ids": len(self.prompt_ids),
        }
        if self.seeds is not None:
            lengths["seeds"] = len(self.seeds)
        bad = {k: n for k, n in lengths.items() if n != b}
        if bad:
            raise DataError(f"{bad} do not match the {b} rows of tokens. Give one entry per row.")

    # ---- constructors

    @classmethod
    def from_sequences(
        cls,
        prompts: Sequence[Sequence[int]],
        completions: Sequence[Sequence[int]],
        sources: str | Sequence[str],
        prompt_ids: Sequence[int] | None = None,
        pad_id: int = 0,
        *,
        mask: MaskMode = "completion",
        seeds: Sequence[int | None] | None = None,
    ) -> Inputs:
        """Right-pad prompt + completion rows. `prompt_ids` default: one id per distinct prompt."""
        n = len(prompts)
        if n == 0:
            raise DataError("No rows: prompts is empty. Pass at least one (prompt, completion) pair.")
        if len(completions) != n:
            raise DataError(f"{n} prompts but {len(completions)} completions; give one per prompt.")
        sources = [sources] * n if isinstance(sources, str) else [str(s) for s in sources]
        if len(sources) != n:
            raise DataError(f"{n} rows but {len(sources)} sources; give one source per row (or one string).")
        if mask not in ("completion", "all"):
            raise DataError(f"mask={mask!r} is not a mask mode; use 'completion' or 'all'.")
        pairs = enumerate(zip(prompts, completions))
        rows = [_ids(p, i, "prompt") + _ids(c, i, "completion") for i, (p, c) in pairs]
        for i, row in enumerate(rows):
            if not row:
                raise DataError(f"Row {i} is empty (no prompt and no completion tokens). Drop it.")
            if min(row) < 0:
                raise DataError(f"Row {i} holds a negative token id {min(row)}. Token ids are >= 0.")
        width = max(len(r) for r in rows)
        tokens = torch.full((n, width), int(pad_id), dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.bool)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention[i, : len(row)] = True
        plens = torch.tensor([len(p) for p in prompts], dtype=torch.long)
        positions = torch.arange(width)[None, :]
        counted = attention if mask == "all" else attention & (positions >= plens[:, None])
        if prompt_ids is None:
            first: dict[tuple[int, ...], int] = {}
            prompt_ids = [first.setdefault(tuple(int(t) for t in p), len(first)) for p in prompts]
        elif len(prompt_ids) != n:
            raise DataError(f"{n} rows but {len(prompt_ids)} prompt_ids; give one per row.")
        return cls(
            tokens=tokens,
            mask=counted,
            attention_mask=attention,
            prompt_lengths=plens,
            sources=sources,
            prompt_ids=[int(i) for i in prompt_ids],
            seeds=None if seeds is None else [None if s is None else int(s) for s in seeds],
            pad_id=int(pad_id),
        )

    @classmethod
    def from_jsonl(
        cls,
        path_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        pad_id: int = 0,
        mask: MaskMode = "completion",
        limit: int | None = None,
        tokenizer: Any = None,
        n_ctx: int | None = None,
    ) -> Inputs:
        """Read distillation JSONL (one or several files, concatenated in order); text and chat rows
        are tokenised with `tokenizer`'s chat template (`workbench.core.text_rows`)."""
        rows = read_jsonl(path_or_paths, limit=limit, tokenizer=tokenizer, n_ctx=n_ctx)
        if not rows:
            raise DataError(f"No rows in {path_or_paths}. Generate the distillation data first.")
        have_ids = all("prompt_id" in r for r in rows)
        return cls.from_sequences(
            [r["prompt"] for r in rows],
            [r["completion"] for r in rows],
            [r["source"] for r in rows],
            prompt_ids=[r["prompt_id"] for r in rows] if have_ids else None,
            pad_id=pad_id,
            mask=mask,
            seeds=[r.get("seed") for r in rows],
        )

    # ---- views

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        """Non-pad tokens per row."""
        return self.attention_mask.sum(dim=1)

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def next_token_mask(self) -> Bool[Tensor, "batch pos_minus_1"]:
        """`mask` aligned with `logits[:, :-1]`: True where the next token counts."""
        return self.mask[:, 1:]

    def select(self, idx: int | slice | Sequence[int] | Tensor) -> Inputs:
        """A subset of rows (ints, a slice, a bool mask or an index tensor), trimmed of pad columns."""
        if isinstance(idx, int):
            idx = [idx]
        if isinstance(idx, slice):
            idx = list(range(len(self)))[idx]
        index = torch.as_tensor(idx, device="cpu")
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise DataError(f"A boolean selection needs {len(self)} entries; got {tuple(index.shape)}.")
            index = index.nonzero().flatten()
        rows = index.long().tolist()
        if rows and (min(rows) < -len(self) or max(rows) >= len(self)):
            raise DataError(f"Row index out of range for {len(self)} rows: {rows}.")
        if not rows:
            raise DataError("The selection is empty; select at least one row.")
        dev = self.tokens.device
        t = torch.tensor(rows, dtype=torch.long, device=dev)
        width = max(int(self.attention_mask[t].sum(dim=1).max()), 1)
        return Inputs(
            tokens=self.tokens[t, :width],
            mask=self.mask[t, :width],
            attention_mask=self.attention_mask[t, :width],
            prompt_lengths=self.prompt_lengths[t],
            sources=[self.sources[i] for i in rows],
            prompt_ids=[self.prompt_ids[i] for i in rows],
            seeds=None if self.seeds is None else [self.seeds[i] for i in rows],
            pad_id=self.pad_id,
        )

    def batches(self, batch_size: int) -> Iterator[Inputs]:
        """Consecutive batches of at most `batch_size` rows, each trimmed of pad columns."""
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size}; it must be >= 1.")
        for start in range(0, len(self), batch_size):
            yield self.select(slice(start, start + batch_size))

    def to(self, device: str | torch.device) -> Inputs:
        return replace(
            self,
            tokens=self.tokens.to(device),
            mask=self.mask.to(device),
            attention_mask=self.attention_mask.to(device),
            prompt_lengths=self.prompt_lengths.to(device),
        )

    # ---- checks and identity

    def validate(self, d_vocab: int, n_ctx: int | None = None) -> Inputs:
        """Raise DataError on empty data, ids outside [0, d_vocab), or rows longer than n_ctx."""
        if len(self) == 0 or not bool(self.attention_mask.any()):
            raise DataError("The data is empty (no rows or no tokens). Generate or select some data first.")
        if not bool(self.mask.any()):
            raise DataError(
                "No position is marked as counting (every completion is empty). Use mask='all' or "
                "data with completions."
            )
        if not 0 <= self.pad_id < d_vocab:
            raise DataError(
                f"pad_id={self.pad_id} is outside the vocabulary [0, {d_vocab}). Use a pad id < d_vocab."
            )
        bad = self.attention_mask & ((self.tokens < 0) | (self.tokens >= d_vocab))
        if bool(bad.any()):
            row, pos = (int(v) for v in bad.nonzero()[0])
            raise DataError(
                f"Token id {int(self.tokens[row, pos])} at row {row}, position {pos} (source "
                f"{self.sources[row]!r}) is outside the vocabulary [0, {d_vocab}); {int(bad.sum())} such "
                "tokens in all. Encode the data with the models' tokenizer, or drop those rows."
            )
        if n_ctx is not None:
            lengths = self.lengths
            too_long = (lengths > n_ctx).nonzero().flatten().tolist()
            if too_long:
                row = too_long[0]
                raise DataError(
                    f"Row {row} has {int(lengths[row])} tokens, longer than the context n_ctx={n_ctx}; "
                    f"{len(too_long)} rows are too long. Truncate the completions or filter those rows."
                )
        return self

    def content_hash(self) -> str:
        """sha256 over each row's tokens, mask, prompt length, source and prompt id (padding-free)."""
        h = hashlib.sha256()
        tokens, mask, att = self.tokens.cpu(), self.mask.cpu(), self.attention_mask.cpu()
        for i in range(len(self)):
            n = int(att[i].sum())
            h.update(f"{n}|{int(self.prompt_lengths[i])}|{self.prompt_ids[i]}|{self.sources[i]}|".encode())
            h.update(tokens[i, :n].to(torch.int64).numpy().tobytes())
            h.update(mask[i, :n].to(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def to_rows(self) -> list[dict[str, Any]]:
        """JSONL rows (prompt, completion, source, prompt_id, seed when known)."""
        rows = []
        tokens, att = self.tokens.cpu(), self.attention_mask.cpu()
        for i in range(len(self)):
            ids = tokens[i, : int(att[i].sum())].tolist()
            p = int(self.prompt_lengths[i])
            row: dict[str, Any] = {
                "prompt": ids[:p],
                "completion": ids[p:],
                "source": self.sources[i],
                "prompt_id": self.prompt_ids[i],
            }
            if self.seeds is not None and self.seeds[i] is not None:
                row["seed"] = self.seeds[i]
            rows.append(row)
        return rows


def _ids(seq: Sequence[int], row: int, part: str) -> list[int]:
    """Token ids as Python ints; DataError names the row when one is not an integer."""
    out = []
    for t in seq:
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            if isinstance(t, Tensor) and t.ndim == 0 and not t.is_floating_point():
                t = int(t)
            else:
                raise DataError(f"Row {row}: {part} holds {t!r}, not an integer token id. Encode text first.")
        out.append(int(t))
    return out


# --------------------------------------------------------------------------- JSONL


def write_jsonl(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> str:
    """Write rows as JSONL atomically (one compact, key-sorted object per line). Returns sha256."""
    text = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in rows)
    return atomic_write_text(path, text)


def read_jsonl(
    path_or_paths: str | os.PathLike | Sequence[str | os.PathLike], limit: int | None = None, *,
    tokenizer: Any = None, n_ctx: int | None = None,
) -> list[dict[str, Any]]:
    """Read distillation rows, checking each has prompt, completion and source. A file of text
    or chat rows (`workbench.core.text_rows`, detected per file by the row keys) is tokenised
    with `tokenizer`'s chat template into token-id rows; `n_ctx` bounds their length."""
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    rows: list[dict[str, Any]] = []
    encoder: TextEncoder | None = None
    for path in map(Path, paths):
        if limit is not None and len(rows) >= limit:
            break
        raw = _read_lines(path, None if limit is None else limit - len(rows))
        kind = file_kind(raw, str(path))
        check_rows(raw, kind, str(path))  # every row's keys, types and ranges, before any is used
        if kind != "tokens":
            if encoder is None and tokenizer is not None:
                encoder = TextEncoder(tokenizer, n_ctx)
            rows += tokenize_rows(raw, kind, encoder, str(path))
            continue
        rows += [row for _, row in raw]
    return rows


def _read_lines(path: Path, limit: int | None) -> list[tuple[int, Any]]:
    """(line number, parsed row) of a JSONL file's non-blank lines, at most `limit`."""
    if not path.is_file():
        raise DataError(f"No data file at {path}. Generate the distillation data first, or fix the path.")
    out: list[tuple[int, Any]] = []
    with path.open("rb") as f:
        for lineno, data in enumerate(f, 1):
            if limit is not None and len(out) >= limit:
                break
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno} is not valid UTF-8 (byte {data[e.start:e.start + 1]!r} at column "
                                f"{e.start + 1}). Save the file as UTF-8, or regenerate it.") from None
            if not line.strip():
                continue
            try:
                out.append((lineno, json.loads(line)))
            except (json.JSONDecodeError, RecursionError) as e:
                raise DataError(f"{path}:{lineno} is not valid JSON ({type(e).__name__}: {str(e)[:200]}). "
                                "Regenerate the file.") from None
    return out


def distillation_inputs(paths: list[Path], max_rows: int, seed: int = 0, *, tokenizer: Any = None,
                        n_ctx: int | None = None) -> Inputs:
    """Teacher- and base-written rows on prompts both sources continued, at most `max_rows` each.
    Text and chat rows are tokenised with `tokenizer` (see `read_jsonl`)."""
    rows = read_jsonl(paths, tokenizer=tokenizer, n_ctx=n_ctx)
    by_source: dict[str, dict[int, list[dict]]] = {}
    for r in rows:
        if "prompt_id" not in r:
            raise DataError("Distillation rows need a prompt_id (teacher and base rows of one prompt share it).")
        by_source.setdefault(r["source"], {}).setdefault(int(r["prompt_id"]), []).append(r)
    for need in ("teacher", "base"):
        if need not in by_source:
            raise DataError(f"No rows with source {need!r} in {[str(p) for p in paths]}; the probe needs teacher- and "
                            f"base-written rows (sources found: {sorted(by_source)}).")
    shared = sorted(set(by_source["teacher"]) & set(by_source["base"]))
    if len(shared) < 10:
        raise DataError(f"Only {len(shared)} prompts were continued by both teacher and base; need at least 10.")
    order = torch.randperm(len(shared), generator=torch.Generator().manual_seed(seed)).tolist()
    picked: dict[str, list[dict]] = {"teacher": [], "base": []}
    for i in order:
        pid = shared[i]
        if all(len(v) >= max_rows for v in picked.values()):
            break
        for src in picked:
            room = max_rows - len(picked[src])
            picked[src] += by_source[src][pid][:room]
    chosen = picked["teacher"] + picked["base"]
    return Inputs.from_sequences([r["prompt"] for r in chosen], [r["completion"] for r in chosen],
                                 [r["source"] for r in chosen], prompt_ids=[int(r["prompt_id"]) for r in chosen])
