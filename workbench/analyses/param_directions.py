"""Directions in parameter space (dicts over the Lineage's clean keys): norm, masking, random controls."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor

from workbench.engines.alignment_model import Params


def norm(direction: Mapping[str, Tensor], exclude: Sequence[str] = ()) -> float:
    """Euclidean norm over every key not starting with a prefix in `exclude`."""
    return float(sum((v.double() ** 2).sum() for k, v in direction.items() if not k.startswith(tuple(exclude))) ** 0.5)


def without(direction: Mapping[str, Tensor], prefixes: Sequence[str]) -> Params:
    """The direction with keys starting with any of `prefixes` set to zero (e.g. the unembedding)."""
    return {k: torch.zeros_like(v) if k.startswith(tuple(prefixes)) else v for k, v in direction.items()}


def only(direction: Mapping[str, Tensor], keys: Sequence[str]) -> Params:
    """The direction restricted to `keys` (others zero)."""
    keep = set(keys)
    return {k: v if k in keep else torch.zeros_like(v) for k, v in direction.items()}


def point_on_line(at: Mapping[str, Tensor], d: Mapping[str, Tensor], s: float, out: Params | None = None) -> Params:
    """at + s d per key, written into `out` (allocated like `at` when None) and returned: quadrature
    loops reuse ONE whole-model buffer for every node instead of a fresh copy per node. Computed
    as s * d, then + at, the same roundings as `at[k] + s * d[k]`, so the values are bit-identical."""
    if out is None:
        out = {k: torch.empty_like(v) for k, v in at.items()}
    with torch.no_grad():
        for k, v in at.items():
            torch.mul(d[k], s, out=out[k]).add_(v)
    return out


def random_direction(like: Mapping[str, Tensor], seed: int, scale: float | None = None) -> Params:
    """A Gaussian direction over the same keys with total norm `scale` (default: the norm of `like`).

    Two passes over the same seeded stream (first the norm, then the scaled draws), so only one
    key's float64 draw exists at a time rather than a whole model's (2x a float32 model's bytes)."""

    def draws() -> Iterator[tuple[str, Tensor]]:
        gen = torch.Generator().manual_seed(seed)
        for k, v in like.items():
            yield k, torch.randn(v.shape, generator=gen, dtype=torch.float64)

    raw_sq: Tensor | int = 0  # summed key by key in order, as `norm` does
    for _, r in draws():
        raw_sq = raw_sq + r.mul_(r).sum()  # in place: the same values as (r**2).sum(), one buffer
    target = norm(like) if scale is None else scale
    factor = target / max(float(raw_sq ** 0.5), 1e-30)
    return {k: r.mul_(factor).to(like[k].device, like[k].dtype) for k, r in draws()}


__all__ = ["norm", "only", "point_on_line", "random_direction", "without"]
