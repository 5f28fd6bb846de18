"""What `run_alignment` computes: its configuration dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workbench.core.errors import ConfigError

DEFAULT_MEMORY_BUDGET = 2**31
"""2 GiB of per-example gradients: the organism's batch fits in one call; a 7B model in bf16 takes
one row per call with its keys in ~8 chunks."""

NO_UNEMBED = ("unembed.",)
"""Key prefixes left out of the "no unembedding" variants (g_trait_no_unembed, cosines without it)."""


@dataclass
class AlignmentConfig:
    """What `run_alignment` computes (defaults run on a CPU in minutes)."""

    loss: str = "hard"  # "hard" (CE of the written tokens) or "soft" (renormalised KL to the teacher's logits)
    base: str = "base"  # the model the scores are taken at
    teacher: str = "teacher"  # gives the teacher delta, the soft targets and the oracle
    student: str | None = "student"  # its delta is scored too when present
    positive: str = "teacher"  # source label of teacher-written rows
    negative: str = "base"  # source label of base-written rows
    max_rows_per_source: int | None = 2000  # rows sampled per source (None: all)
    n_random: int = 8  # random directions with the teacher delta's norm (controls)
    path_points: tuple[int, ...] = (1, 2, 4, 8, 16)  # K values (Gauss-Legendre) for the path-integrated teacher delta
    path_group_points: int = 4  # K of the path-integrated per-group attribution (0: skip)
    channel_ids: tuple[int, ...] | None = None  # the number channel: token ids the losses renormalise over (the
    # source's: numbers, separator, end of text); None: the soft loss runs over the full vocabulary
    soft_full_vocab: bool = False  # soft loss over the full vocabulary (the leak control) instead of the number channel
    hard_renormalised: bool = False  # hard loss renormalised over the number channel (the organism's hard students);
    # False: full-vocabulary CE, the exact text likelihood, whose teacher-delta path integral is the oracle
    etas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)  # SGD step sizes of the first-order prediction
    prediction_batches: int = 4  # batches of teacher rows for the prediction table (0: skip it)
    prediction_batch_size: int = 64  # rows per prediction batch
    batch_size: int = 256  # rows per jvp batch
    grad_batch_size: int = 64  # rows per per-example-gradient batch (memory: see memory_budget_bytes)
    # most bytes of per-example gradients (or of one jvp tangent, split by groups of keys past it) held at once
    memory_budget_bytes: int | None = DEFAULT_MEMORY_BUDGET
    # (per-group scores and cosines): fewer rows per call, then parameter keys split
    # (workbench.engines.grad_chunks); None: the whole batch's (grad_batch_size x n_params x bytes per element)
    seed: int = 0  # row sampling and random directions
    backend: str = "auto"  # AlignmentModel backend
    device: str = "cpu"  # cpu, cuda, auto
    progress: bool = False  # progress bars (lines when not on a terminal)

    def validate(self) -> AlignmentConfig:
        if self.loss not in ("hard", "soft"):
            raise ConfigError(f"loss={self.loss!r}; use 'hard' or 'soft'.")
        if not self.path_points or min(self.path_points) < 1:
            raise ConfigError(f"path_points={self.path_points}; give K values >= 1.")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes <= 0:
            raise ConfigError(f"memory_budget_bytes={self.memory_budget_bytes}; give a positive number of bytes, or "
                              "None for no limit.")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlignmentConfig:
        d = dict(d)
        for k in ("path_points", "etas", "channel_ids"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str) -> int | None:
    """'2GiB', '512MiB', '1e9', '4096' -> bytes; 'none' -> None (no limit). For the budget flags."""
    t = text.strip().lower()
    if t in ("none", "inf", "unlimited"):
        return None
    number = t.rstrip("kmgib")
    unit = t[len(number):]
    try:
        value = int(float(number) * _UNITS[unit])
    except (KeyError, ValueError):
        raise ConfigError(f"Memory budget {text!r} is not a size; write e.g. 2GiB, 512MiB, 1e9 or none.") from None
    if value <= 0:
        raise ConfigError(f"Memory budget {text!r} is not positive; write e.g. 2GiB, or none for no limit.")
    return value


__all__ = ["AlignmentConfig", "DEFAULT_MEMORY_BUDGET", "NO_UNEMBED", "parse_bytes"]
