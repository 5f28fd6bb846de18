"""Per-row alignment scores on disk: a directory written batch by batch, read back lazily.

Layout (the activation store's files, `workbench.capture.store`, with another manifest kind)::

    manifest.json                                         written last: its presence means "complete"
    inputs.safetensors                                    the rows that were scored
    shards/{direction}/total/{batch:05d}.safetensors      a_i of one batch's rows         [rows]
    shards/{direction}/per_token/{batch:05d}.safetensors  a_{i,t} of them (zero-padded)   [rows, width]

One shard per (direction, batch of `batch_size` rows): batch b holds rows [b * batch_size,
(b + 1) * batch_size), whatever the number of processes that wrote it, so the floats do not
depend on it. The manifest records the plan (the inputs' content hash, every direction's and the
model's weight hash, the objective, batch size, jvp method, memory budget) and every shard with
its sha256; `ScoreStore` checks the sha256 of a shard the first time it reads it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import safe_open
from torch import Tensor

from workbench.capture.store import MANIFEST, TENSOR_KEY, ShardSpec, load_inputs, safe_child
from workbench.core.errors import ArtifactError, ChecksumError, unknown_name
from workbench.core.inputs import Inputs
from workbench.core.io import read_json, sha256_file
from workbench.engines.per_example import TokenScores

SCORES_KIND = "alignment_scores"
SCORES_SCHEMA_VERSION = 1
PARTS = ("total", "per_token")
"""The two tensors of a batch, each its own shard: a_i, and a_{i,t} (position t predicts token t+1)."""


def batch_specs(direction: str, index: int, batch_size: int, n_rows: int) -> list[ShardSpec]:
    """The shards of batch `index` of one direction (rows [index * batch_size, ... ) cut at n_rows)."""
    start = index * batch_size
    stop = min(start + batch_size, n_rows)
    return [ShardSpec(direction, part, index, start, stop) for part in PARTS]


class ScoreStore:
    """A finished score store: `total(direction)` (a_i of every row), `per_token(direction, rows)`
    and `scores(direction)` (a `TokenScores`, equal to the in-memory `alignment_scores`)."""

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        self.directory = directory
        self.manifest = manifest
        self._verified: set[str] = set()
        self._shards: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for s in manifest["shards"]:
            safe_child(directory, s["path"])
            self._shards.setdefault((s["model"], s["hook"]), []).append(s)
        n = self.n_rows
        for name in self.directions:
            for part in PARTS:
                at = 0
                for lo, hi in sorted(tuple(s["rows"]) for s in self._shards.get((name, part), [])):
                    if lo != at or hi <= lo:
                        break
                    at = hi
                if at != n:
                    raise ArtifactError(f"{directory / MANIFEST}: the {part} shards of {name!r} do not cover rows "
                                        f"0..{n} exactly: the store was edited. Delete it and score again.")

    @classmethod
    def open(cls, directory: str | os.PathLike) -> ScoreStore:
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.exists():
            hint = " A run into it was interrupted: run the same command again to finish it." if (directory / "shards").exists() else ""
            raise ArtifactError(f"No alignment-score store in {directory}: {MANIFEST} is missing.{hint}")
        manifest = read_json(path)
        if not isinstance(manifest, dict) or manifest.get("kind") != SCORES_KIND:
            kind = manifest.get("kind") if isinstance(manifest, dict) else None
            raise ArtifactError(f"{path} is not an alignment-score store (kind {kind!r}); point at a directory written "
                                "by stream_alignment_scores or python -m workbench.align_rows.")
        if manifest.get("store_schema_version") != SCORES_SCHEMA_VERSION:
            raise ArtifactError(f"{path} has store_schema_version {manifest.get('store_schema_version')!r}; this "
                                f"workbench reads {SCORES_SCHEMA_VERSION}. Score again with this version.")
        return cls(directory, manifest)

    @property
    def directions(self) -> list[str]:
        return list(self.manifest["directions"])

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    @property
    def width(self) -> int:
        return int(self.manifest["width"])

    @property
    def inputs(self) -> Inputs:
        """The rows that were scored (checksum verified)."""
        info = self.manifest["inputs"]
        return load_inputs(safe_child(self.directory, info["file"]), info["sha256"])

    def _read(self, direction: str, part: str, rows: slice | None) -> Tensor:
        if direction not in self.directions:
            raise unknown_name("direction", direction, self.directions, fix=f"Directions scored in {self.directory}.")
        start, stop, _ = (rows or slice(None)).indices(self.n_rows)
        pieces = []
        for shard in sorted(self._shards[(direction, part)], key=lambda s: s["rows"][0]):
            lo, hi = shard["rows"]
            a, b = max(lo, start), min(hi, stop)
            if a >= b:
                continue
            path = safe_child(self.directory, shard["path"])
            if shard["path"] not in self._verified:
                if not path.is_file():
                    raise ArtifactError(f"Shard {path} listed in {self.directory / MANIFEST} is missing. Run the same "
                                        "command again with --overwrite (or delete the store) to score it again.")
                if sha256_file(path) != shard["sha256"]:
                    raise ChecksumError(f"Checksum mismatch for {path}: the shard is corrupt or was changed. Delete "
                                        "the store and score again.")
                self._verified.add(shard["path"])
            with safe_open(str(path), framework="pt") as f:
                pieces.append(f.get_slice(TENSOR_KEY)[a - lo:b - lo])
        dtype = getattr(torch, self.manifest["score_dtype"])
        if not pieces:
            return torch.zeros((0,) if part == "total" else (0, self.width), dtype=dtype)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def total(self, direction: str, rows: slice | None = None) -> Float[Tensor, " n"]:
        """a_i of `rows` (default: every row)."""
        return self._read(direction, "total", rows)

    def per_token(self, direction: str, rows: slice | None = None) -> Float[Tensor, "n seq_1"]:
        """a_{i,t} of `rows` (default: every row), zero where not counted."""
        return self._read(direction, "per_token", rows)

    def scores(self, direction: str) -> TokenScores:
        """Every row's a_i and a_{i,t}, as `alignment_scores` returns them."""
        return TokenScores(self.total(direction), self.per_token(direction))

    def __repr__(self) -> str:
        return f"ScoreStore({self.directory}, directions={self.directions}, rows={self.n_rows})"


__all__ = ["PARTS", "SCORES_KIND", "SCORES_SCHEMA_VERSION", "ScoreStore", "batch_specs"]
