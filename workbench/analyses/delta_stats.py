"""Inner products, norms and top-k singular subspaces of weight deltas, one key at a time.

What `workbench.analyses.weights` streams over parameter groups with, so that a 7B-14B lineage
fits one GPU: a delta is held in the model's dtype (bf16 on a GPU) one key at a time, and every
float64 computation runs on chunks of at most `CHUNK` elements, so no whole-model (or
whole-embedding) float64 copy is ever built; a delta of two live weights is a `Difference`,
subtracted chunk by chunk as it is read, so not even one key's delta is held whole (an
embedding's delta would be a third of a ~50M model). A delta is also either a dense tensor or a LoRA factor
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

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.core.lora import LoraFactor

CHUNK = 1 << 22
"""Elements per float64 chunk (32 MB)."""

EXACT_SVD_MAX_NUMEL = 1 << 22
"""Largest matrix (elements) whose subspaces come from an exact SVD; larger ones use the Gram matrix."""


@dataclass(frozen=True)
class Difference:
    """a - b for one key, never built whole: every chunk read is `(a[i:j] - b[i:j])` in the
    weights' dtype, moved to `device`, so a delta of two live parameters costs no memory until
    a bounded chunk of it is used (the same numbers as slicing `(a - b).to(device)`)."""

    a: Tensor
    b: Tensor
    device: torch.device | None = None

    @property
    def shape(self) -> torch.Size:
        return self.a.shape

    @property
    def T(self) -> Difference:  # noqa: N802 (Tensor's name)
        return Difference(self.a.T, self.b.T, self.device)

    def numel(self) -> int:
        return self.a.numel()

    def rows(self, i: int, j: int) -> Tensor:
        """Rows i:j (first dimension) of a - b."""
        return (self.a[i:j] - self.b[i:j]).to(self.device)

    def flat(self, i: int, j: int) -> Tensor:
        """Elements i:j of the flattened a - b."""
        return (self.a.reshape(-1)[i:j] - self.b.reshape(-1)[i:j]).to(self.device)

    def dense(self) -> Tensor:
        """The whole a - b (only for matrices small enough for an exact SVD)."""
        return (self.a - self.b).to(self.device)


Delta = Tensor | LoraFactor | Difference
"""One key's delta: a dense tensor (model dtype), an exact low-rank factor, or a lazy difference."""


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


def _flat_chunk(x: Tensor | Difference, i: int) -> Tensor:
    """Flat elements i:i+CHUNK in float64."""
    if isinstance(x, Difference):
        return x.flat(i, i + CHUNK).double()
    return x.reshape(-1)[i : i + CHUNK].double()


def _row_steps(x: Float[Tensor, "rows cols"] | Difference) -> range:
    return range(0, x.shape[0], max(1, CHUNK // max(1, x.shape[1])))


def _rows(x: Float[Tensor, "rows cols"] | Difference, i: int) -> Tensor:
    """Rows i:i+step in float64 (step: CHUNK elements' worth of rows)."""
    step = max(1, CHUNK // max(1, x.shape[1]))
    return (x.rows(i, i + step) if isinstance(x, Difference) else x[i : i + step]).double()


def _device(x: Tensor | Difference) -> torch.device:
    if isinstance(x, Difference):
        return x.device if x.device is not None else x.a.device
    return x.device


def _factor_dense_dot(f: LoraFactor, d: Float[Tensor, "rows cols"] | Difference) -> float:
    b, a = factors(f, _device(d))
    btd = torch.zeros(b.shape[1], d.shape[1], dtype=torch.float64, device=_device(d))
    for i in _row_steps(d):
        rows = _rows(d, i)
        btd += b[i : i + rows.shape[0]].T @ rows
        del rows
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
    total = 0.0  # one chunk of each alive at a time (a zip of generators would hold two)
    for i in range(0, x.numel(), CHUNK):
        a = _flat_chunk(x, i)
        b = _flat_chunk(y, i)
        total += float(a @ b)
        del a, b
    return total


def sq_norm(x: Delta) -> float:
    """||x||^2, accumulated in float64."""
    if isinstance(x, LoraFactor):
        b, a = factors(x)
        return x.scaling**2 * float(((b.T @ b) * (a @ a.T)).sum())
    total = 0.0
    for i in range(0, x.numel(), CHUNK):
        c = _flat_chunk(x, i)
        total += float(c @ c)
        del c
    return total


def _gram_top(x: Float[Tensor, "rows cols"] | Difference, k: int) -> tuple[Tensor, Tensor]:
    """Top-k (U, V) of a matrix with rows >= cols from its cols x cols Gram matrix."""
    g = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=_device(x))
    for i in _row_steps(x):  # one chunk alive at a time
        rows = _rows(x, i)
        g += rows.T @ rows
        del rows
    _, vecs = torch.linalg.eigh(g)
    v = vecs[:, -k:].flip(-1)
    xv = torch.cat([_rows(x, i) @ v for i in _row_steps(x)])
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
        dense = x.dense() if isinstance(x, Difference) else x
        u, _, vh = torch.linalg.svd(dense.double(), full_matrices=False)
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
