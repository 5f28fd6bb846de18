"""Directions in parameter space (mappings over the Lineage's clean keys): norm, masking, random
controls. Masks and random controls are `LazyParams` (made key by key when read), so an analysis
holding a dozen directions of a 7B model holds none of them whole."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from workbench.core.lazy_params import LazyParams, shapes_of
from workbench.engines.alignment_model import Params


def norm(direction: Mapping[str, Tensor], exclude: Sequence[str] = ()) -> float:
    """Euclidean norm over every key not starting with a prefix in `exclude`."""
    skip = tuple(exclude)
    return float(sum((_sum_sq(direction[k]) for k in direction if not k.startswith(skip)),
                     torch.zeros((), dtype=torch.float64)) ** 0.5)


def without(direction: Mapping[str, Tensor], prefixes: Sequence[str]) -> LazyParams:
    """The direction with keys starting with any of `prefixes` zero (e.g. the unembedding); lazy:
    the zeros are made when read, so masking a whole-model direction costs nothing up front."""
    drop = tuple(prefixes)
    return LazyParams(shapes_of(direction),
                      lambda k: torch.zeros_like(direction[k]) if k.startswith(drop) else direction[k])


def only(direction: Mapping[str, Tensor], keys: Sequence[str]) -> LazyParams:
    """The direction restricted to `keys` (others zero); lazy like `without`."""
    keep = set(keys)
    return LazyParams(shapes_of(direction), lambda k: direction[k] if k in keep else torch.zeros_like(direction[k]))


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


DRAW_CHUNK = 1 << 22
"""Elements per draw of a random direction (and per float64 block of a norm): a key is drawn row
block by row block, so the transient stays ~32 MB however large the key (a 7B model's
embedding: 545M elements)."""


def random_direction(like: Mapping[str, Tensor], seed: int, scale: float | None = None) -> LazyParams:
    """A Gaussian direction over the same keys (shapes, dtypes, devices) with total norm `scale`
    (default: the norm of `like`), made key by key when read (`LazyParams`): eight random
    controls of a 7B model would otherwise hold eight models' bytes.

    Each key has its own generator, seeded from (`seed`, key name), on the key's device, so a key
    is redrawn alone and identically at every read, whatever the order of reads (the values
    therefore differ between a CPU and a CUDA model). The norm is summed key by key in float64."""
    meta: dict[str, tuple[torch.Size, torch.dtype, torch.device]] = {}
    target_sq = torch.zeros((), dtype=torch.float64)
    for k, v in like.items():  # one pass: the norm of `like` and each key's layout
        meta[k] = (v.shape, v.dtype, v.device)
        if scale is None:
            target_sq += _sum_sq(v)
    raw_sq = sum((_draw_sum_sq(seed, k, *m) for k, m in meta.items()), torch.zeros((), dtype=torch.float64))
    target = float(target_sq ** 0.5) if scale is None else float(scale)  # as `norm` rounds it
    factor = target / max(float(raw_sq ** 0.5), 1e-30)
    return LazyParams({k: m[0] for k, m in meta.items()}, lambda k: _draw(seed, k, *meta[k], factor=factor))


def _key_seed(seed: int, key: str) -> int:
    """A generator seed for one key of one random direction (stable across runs and platforms)."""
    return (int(seed) * 0x9E3779B1 + zlib.crc32(key.encode())) % (2**63 - 1)


def _draw(seed: int, key: str, shape: torch.Size, dtype: torch.dtype, device: torch.device,
          factor: float = 1.0) -> Tensor:
    """The key's Gaussian draw times `factor`, in `dtype` on `device` (see `_blocks`)."""
    out = torch.empty(shape, dtype=dtype, device=device)
    for rows, block in _blocks(seed, key, shape, dtype, device):
        out[rows].copy_(block.double().mul_(factor))  # scaled in float64, rounded once
    return out


def _draw_sum_sq(seed: int, key: str, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Sum of squares of the key's draw in float64 (before scaling and rounding to `dtype`)."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    for _, block in _blocks(seed, key, shape, dtype, device):
        flat = block.reshape(-1).double()
        total += torch.dot(flat, flat)
    return total.cpu()


def _draw_dtype(dtype: torch.dtype) -> torch.dtype:
    """Random controls of a float64 model are drawn in float64, every other model's in float32
    (3x faster on a CPU; a control's precision beyond float32 carries no information)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _blocks(seed: int, key: str, shape: torch.Size, dtype: torch.dtype, device: torch.device,
            ) -> Iterator[tuple[Any, Tensor]]:
    """(index, block) of the key's Gaussian draw from its own generator, in blocks of at most
    `DRAW_CHUNK` elements along the first dimension (a scalar key: one block), drawn in
    `_draw_dtype(dtype)`."""
    dtype = _draw_dtype(dtype)
    gen = torch.Generator(device=device).manual_seed(_key_seed(seed, key))
    if len(shape) == 0:
        yield (), torch.randn((), generator=gen, dtype=dtype, device=device)
        return
    step = max(1, DRAW_CHUNK // max(1, math.prod(shape[1:])))
    for start in range(0, shape[0], step):
        stop = min(shape[0], start + step)
        yield slice(start, stop), torch.randn((stop - start, *shape[1:]), generator=gen, dtype=dtype, device=device)


def _sum_sq(v: Tensor) -> Tensor:
    """Sum of squares accumulated in float64, a block at a time (no whole-key float64 copy)."""
    flat = v.detach().reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=v.device)
    for start in range(0, flat.numel(), DRAW_CHUNK):
        block = flat[start: start + DRAW_CHUNK].double()
        total += torch.dot(block, block)
    return total.cpu()


__all__ = ["norm", "only", "point_on_line", "random_direction", "without"]
