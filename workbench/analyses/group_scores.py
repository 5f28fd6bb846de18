"""Per-parameter-group alignment from per-example gradients:

    a_{i,g}  = -<grad_g L_i(theta), d_g>       they sum over groups to a_i
    cos_i    = a_i / (|grad L_i| |d|)

One pass of per-example gradients (`vmap(grad)` in chunks) serves every direction, and gives
|grad L_i| for the cosines. With quadrature weights the scores are path-integrated (one
direction only), an additive per-group decomposition of the path score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.analyses.param_directions import norm
from workbench.core.errors import ConfigError
from workbench.core.inputs import Inputs
from workbench.core.lineage import ParamGroup
from workbench.engines.alignment_model import AlignmentModel, check_direction
from workbench.engines.objective import Objective, iter_batches
from workbench.engines.per_example import per_example_grads


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
) -> GroupScores:
    """a_{i,g} for every direction and group from per-example gradients (one pass for all
    directions), plus |grad L_i| with and without `exclude_from_norm` keys (for cosines).

    weights: optional (s, w) pairs: the scores become sum_k w_k a_{i,g}(at + s_k d) (path
    integration; one direction only, since the points depend on it).
    """
    groups = list(groups if groups is not None else model.lineage.groups())
    dirs = {name: check_direction(model, d, name) for name, d in directions.items()}
    if weights is not None and len(dirs) != 1:
        raise ConfigError("Path-integrated group scores take exactly one direction.")
    at = dict(model.params if at is None else at)
    excl = tuple(exclude_from_norm)
    n = len(inputs)
    out = {name: torch.zeros(n, len(groups), dtype=model.score_dtype) for name in dirs}
    gnorm2 = torch.zeros(n, dtype=torch.float64)
    gnorm2_ex = torch.zeros(n, dtype=torch.float64)
    points = weights if weights is not None else [(0.0, 1.0)]
    for batch in iter_batches(model, objective, inputs, batch_size, progress, "alignment (per-example grads)"):
        for s, w in points:
            if weights is not None:
                (name, d), = dirs.items()
                point = {k: at[k] + s * d[k] for k in at}
            else:
                point = at
            grads = per_example_grads(model, objective, batch, point)
            for name, d in dirs.items():
                cols = [
                    -sum((grads[k] * d[k]).flatten(1).sum(-1, dtype=model.score_dtype) for k in g.keys) for g in groups
                ]
                out[name][batch.rows] += w * torch.stack(cols, dim=-1).detach().cpu()
            if weights is None:
                sq = {k: (g.double() ** 2).flatten(1).sum(-1).cpu() for k, g in grads.items()}
                gnorm2[batch.rows] = sum(sq.values())
                gnorm2_ex[batch.rows] = sum(v for k, v in sq.items() if not k.startswith(excl))
    return GroupScores([g.name for g in groups], out, gnorm2.sqrt(), gnorm2_ex.sqrt(), excl)


__all__ = ["GroupScores", "group_scores"]
