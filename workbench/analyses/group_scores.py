"""Per-parameter-group alignment from per-example gradients:

    a_{i,g}  = -<grad_g L_i(theta), d_g>       they sum over groups to a_i
    cos_i    = a_i / (|grad L_i| |d|)

One pass of per-example gradients (`vmap(grad)` in chunks of rows and, under a memory budget,
of parameter keys: `workbench.engines.grad_chunks`) serves every direction, and gives |grad L_i|
for the cosines. With quadrature weights the scores are path-integrated (one
direction only), an additive per-group decomposition of the path score.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.analyses.param_directions import norm, point_on_line
from workbench.core.errors import ConfigError
from workbench.core.lazy_params import LazyParams, ReadCache
from workbench.core.inputs import Inputs
from workbench.core.lineage import ParamGroup
from workbench.engines.alignment_model import AlignmentModel, check_direction
from workbench.engines.objective import Objective, iter_batches
from workbench.engines.grad_chunks import grad_chunks, model_plan


@dataclass
class GroupScores:
    """Per-group scores a_{i,g} for each direction (they sum over groups to a_i), and |grad L_i|.

    by_direction: direction name -> [n, groups].
    grad_norm: |grad L_i| over every key; grad_norm_excluding: the same without `excluded` keys.
    """

    groups: list[str]
    by_direction: dict[str, Float[Tensor, "n groups"]]
    grad_norm: Float[Tensor, " n"]
    grad_norm_excluding: Float[Tensor, " n"]
    excluded: tuple[str, ...]

    def total(self, name: str) -> Float[Tensor, " n"]:
        return self.by_direction[name].sum(-1)

    def cosine(self, name: str, direction: Mapping[str, Tensor], exclude: Sequence[str] = ()) -> Float[Tensor, " n"]:
        """a_i / (|grad L_i| |d|), the gradient norm taken without `exclude` when that matches `excluded`."""
        if tuple(exclude) not in ((), self.excluded):
            raise ConfigError(f"Gradient norms were computed excluding {self.excluded}, not {tuple(exclude)}.")
        g = self.grad_norm_excluding if exclude else self.grad_norm
        return self.total(name) / (g * norm(direction, exclude)).clamp(min=1e-30)


def group_scores(
    model: AlignmentModel,
    inputs: Inputs,
    directions: Mapping[str, Mapping[str, Tensor]],
    objective: Objective,
    *,
    groups: Sequence[ParamGroup] | None = None,
    at: Mapping[str, Tensor] | None = None,
    exclude_from_norm: Sequence[str] = ("unembed.",),
    batch_size: int = 64,
    progress: bool = False,
    weights: Sequence[tuple[float, float]] | None = None,
    memory_budget_bytes: int | None = None,
) -> GroupScores:
    """a_{i,g} for every direction and group from per-example gradients (one pass for all
    directions), plus |grad L_i| with and without `exclude_from_norm` keys (for cosines).

    weights: optional (s, w) pairs: the scores become sum_k w_k a_{i,g}(at + s_k d) (path
    integration; one direction only, since the points depend on it).
    memory_budget_bytes: the most bytes of per-example gradients held at once (None: the whole
    batch's, `batch_size` x n_params); `workbench.engines.grad_chunks` splits rows, then keys.
    """
    groups = list(groups if groups is not None else model.lineage.groups())
    cache = ReadCache(memory_budget_bytes)  # lazy directions made once per key while they fit the budget
    dirs = {name: cache.view(name, check_direction(model, d, name)) if isinstance(d, LazyParams)
            else check_direction(model, d, name) for name, d in directions.items()}
    if weights is not None and len(dirs) != 1:
        raise ConfigError("Path-integrated group scores take exactly one direction.")
    at = dict(model.params if at is None else at)
    excl = tuple(exclude_from_norm)
    n = len(inputs)
    out = {name: torch.zeros(n, len(groups), dtype=model.score_dtype) for name in dirs}
    gnorm2 = torch.zeros(n, dtype=torch.float64)
    gnorm2_ex = torch.zeros(n, dtype=torch.float64)
    points = weights if weights is not None else [(0.0, 1.0)]
    buf = None  # path integration: ONE whole-model point buffer, rewritten at every node
    for batch in iter_batches(model, objective, inputs, batch_size, progress, "alignment (per-example grads)"):
        for s, w in points:
            if weights is not None:
                (name, d), = dirs.items()
                point = buf = point_on_line(at, d, s, buf)
            else:
                point = at
            plan = model_plan(model, point, batch.tokens.shape[0], memory_budget_bytes)
            for part, grads in grad_chunks(model, objective, batch, point, plan):
                rows = _rows_of(batch.rows, part)
                n_part = part.stop - part.start
                for name, d in dirs.items():
                    cols = [_group_col(grads, d, g.keys, n_part, model.score_dtype) for g in groups]
                    out[name][rows] += w * torch.stack(cols, dim=-1).detach().cpu()
                if weights is None:
                    sq = {k: _row_sq_norms(g).cpu() for k, g in grads.items()}
                    gnorm2[rows] += sum(sq.values())
                    gnorm2_ex[rows] += sum((v for k, v in sq.items() if not k.startswith(excl)), torch.zeros(n_part,
                                                                                                     dtype=torch.float64))
    return GroupScores([g.name for g in groups], out, gnorm2.sqrt(), gnorm2_ex.sqrt(), excl)


def _rows_of(rows: slice, part: slice) -> slice:
    """The rows of `inputs` that rows `part` of a batch covering `rows` are."""
    return slice(rows.start + part.start, rows.start + part.stop)


def _group_col(grads: Mapping[str, Tensor], d: Mapping[str, Tensor], keys: Sequence[str], n: int,
               dtype: torch.dtype) -> Float[Tensor, " n"]:
    """-<grad_g L_i, d_g> over the group's keys present in this call (zero when none are)."""
    parts = [_row_dots(grads[k], d[k], dtype) for k in keys if k in grads]
    if not parts:
        return torch.zeros(n, dtype=dtype, device=d[keys[0]].device if keys else "cpu")
    return -sum(parts)


ROW_BLOCK_BYTES = 64 * 2**20
"""Most bytes of a temporary in `_row_dots` / `_row_sq_norms`: products and float64 squares of a
call's per-example gradients are formed a column block at a time, not a key at a time (one key
of a 7B embedding, 545M elements, would be 4.4 GB of float64 squares per row)."""


def _column_blocks(g: Tensor, itemsize: int) -> Iterator[slice]:
    """Column slices of `g` flattened to [rows, -1], each block at most `ROW_BLOCK_BYTES`."""
    rows, width = g.shape[0], g[0].numel() if g.shape[0] else 0
    step = max(1, ROW_BLOCK_BYTES // max(1, rows * itemsize))
    for start in range(0, width, step):
        yield slice(start, min(width, start + step))


def _row_dots(g: Float[Tensor, "n ..."], d: Tensor, dtype: torch.dtype) -> Float[Tensor, " n"]:
    """<g_i, d> per row, summed in `dtype`, one column block at a time."""
    gf, df = g.reshape(g.shape[0], -1), d.reshape(-1)
    out = torch.zeros(g.shape[0], dtype=dtype, device=g.device)
    for cols in _column_blocks(g, g.element_size()):
        out += (gf[:, cols] * df[cols]).sum(-1, dtype=dtype)
    return out


def _row_sq_norms(g: Float[Tensor, "n ..."]) -> Float[Tensor, " n"]:
    """|g_i|^2 per row in float64, one column block at a time."""
    gf = g.reshape(g.shape[0], -1)
    out = torch.zeros(g.shape[0], dtype=torch.float64, device=g.device)
    for cols in _column_blocks(g, 8):
        block = gf[:, cols].double()
        out += (block * block).sum(-1)
    return out


__all__ = ["GroupScores", "group_scores"]
