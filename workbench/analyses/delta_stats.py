"""Inner products, norms and top-k singular subspaces of weight deltas, one key at a time.

What `workbench.analyses.weights` streams over parameter groups with, so that a 7B-14B lineage
fits one GPU: a delta is held in the model's dtype (bf16 on a GPU) one key at a time, and every
float64 computation runs on chunks of at most `CHUNK` elements, so no whole-model (or
whole-embedding) float64 copy is ever built. A delta is either a dense tensor or a LoRA factor
(`workbench.core.lora.LoraFactor`, scaling * B @ A): between factors the trace identities

    <s1 B1 A1, D>        = s1 * sum((B1^T D) * A1)
    <s1 B1 A1, s2 B2 A2> = s1 s2 * sum((B1^T B2) * (A1 A2^T))
    ||s B A||_F^2        = s^2 * sum((B^T B) * (A A^T))

give the same numbers without building the full-size product, and its top-k singular subspaces
come from two thin QRs and an r x r SVD.

Subspaces of a dense matrix: an exact float64 SVD up to `EXACT_SVD_MAX_NUMEL` elements (every
matrix of the built-in organisms is far below it, so their figures are unchanged); above it,
the top-k eigenvectors of the smaller Gram matrix (X^T X or X X^T, accumulated in float64 over
row chunks: min(rows, cols)^2 float64 numbers, e.g. 100 MB for a 3584-wide 7B model), then the
other side by a QR of X V. Deterministic (no random projection) and exact up to float error.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.core.lora import LoraFactor

CHUNK = 1 << 22
"""Elements per float64 chunk (32 MB)."""

EXACT_SVD_MAX_NUMEL = 1 << 22
"""Largest matrix (elements) whose subspaces come from an exact SVD; larger ones use the Gram matrix."""

Delta = Tensor | LoraFactor
"""One key's delta: a dense tensor (model dtype) or an exact low-rank factor."""


def factors(f: LoraFactor, device: torch.device | None = None) -> tuple[Float[Tensor, "d_out r"], Float[Tensor, "r d_in"]]:
    """(B', A') in float64 with scaling * B' @ A' equal to the factor's change in the clean key's
    layout (B and A swapped and transposed when the key is stored transposed)."""
    b, a = f.B.to(device=device, dtype=torch.float64), f.A.to(device=device, dtype=torch.float64)
    return (a.T, b.T) if f.transpose else (b, a)


def shape_of(x: Delta) -> tuple[int, ...]:
    if isinstance(x, LoraFactor):
        d_out, d_in = x.B.shape[0], x.A.shape[1]
        return (d_in, d_out) if x.transpose else (d_out, d_in)
    return tuple(x.shape)


def _flat_chunks(x: Tensor) -> Iterator[Tensor]:
    flat = x.reshape(-1)
    for i in range(0, flat.numel(), CHUNK):
        yield flat[i : i + CHUNK].double()


def _row_chunks(x: Float[Tensor, "rows cols"]) -> Iterator[tuple[int, Tensor]]:
    step = max(1, CHUNK // max(1, x.shape[1]))
    for i in range(0, x.shape[0], step):
        yield i, x[i : i + step].double()


def _factor_dense_dot(f: LoraFactor, d: Float[Tensor, "rows cols"]) -> float:
    b, a = factors(f, d.device)
    btd = torch.zeros(b.shape[1], d.shape[1], dtype=torch.float64, device=d.device)
    for i, rows in _row_chunks(d):
        btd += b[i : i + rows.shape[0]].T @ rows
    return f.scaling * float((btd * a).sum())


def dot(x: Delta, y: Delta) -> float:
    """<x, y> (Frobenius), accumulated in float64."""
    if isinstance(x, LoraFactor) and isinstance(y, LoraFactor):
        b1, a1 = factors(x)
        b2, a2 = factors(y, b1.device)
        return x.scaling * y.scaling * float(((b1.T @ b2) * (a1 @ a2.T)).sum())
    if isinstance(x, LoraFactor):
        return _factor_dense_dot(x, y)  # type: ignore[arg-type]
    if isinstance(y, LoraFactor):
        return _factor_dense_dot(y, x)
    return float(sum(float(a @ b) for a, b in zip(_flat_chunks(x), _flat_chunks(y))))


def sq_norm(x: Delta) -> float:
    """||x||^2, accumulated in float64."""
    if isinstance(x, LoraFactor):
        b, a = factors(x)
        return x.scaling**2 * float(((b.T @ b) * (a @ a.T)).sum())
    return float(sum(float(c @ c) for c in _flat_chunks(x)))


def _gram_top(x: Float[Tensor, "rows cols"], k: int) -> tuple[Tensor, Tensor]:
    """Top-k (U, V) of a matrix with rows >= cols from its cols x cols Gram matrix."""
    g = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for _, rows in _row_chunks(x):
        g += rows.T @ rows
    _, vecs = torch.linalg.eigh(g)
    v = vecs[:, -k:].flip(-1)
    xv = torch.cat([rows @ v for _, rows in _row_chunks(x)])
    return torch.linalg.qr(xv)[0], v


def top_subspaces(x: Delta, k: int) -> tuple[Float[Tensor, "rows k"], Float[Tensor, "cols k"]]:
    """Orthonormal bases (float64) of the top-k left and right singular subspaces of x."""
    if isinstance(x, LoraFactor):
        b, a = factors(x)
        if k <= b.shape[1]:
            qb, rb = torch.linalg.qr(b)
            qa, ra = torch.linalg.qr(a.T)
            u, _, vh = torch.linalg.svd(rb @ ra.T)
            return qb @ u[:, :k], qa @ vh[:k].T
        x = x.delta(torch.float64)  # more directions than the rank: the rest are the exact SVD's choice
    if x.numel() <= EXACT_SVD_MAX_NUMEL:
        u, _, vh = torch.linalg.svd(x.double(), full_matrices=False)
        return u[:, :k], vh[:k].T
    if x.shape[0] >= x.shape[1]:
        return _gram_top(x, k)
    v, u = _gram_top(x.T, k)
    return u, v


def overlap(
    a: tuple[Tensor, Tensor], t: tuple[Tensor, Tensor], shape: tuple[int, ...], k: int
) -> dict[str, float]:
    """Mean squared cosine of the principal angles between two pairs of (left, right) k-bases."""
    out = torch.linalg.svdvals(a[0].T @ t[0].to(a[0].device))
    inp = torch.linalg.svdvals(a[1].T @ t[1].to(a[1].device))
    return {
        "overlap_out": float((out**2).mean()),
        "overlap_in": float((inp**2).mean()),
        "chance_out": k / shape[0],
        "chance_in": k / shape[1],
        "k": k,
    }
