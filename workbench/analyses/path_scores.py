"""Path-integrated alignment along theta + s d, s in [0, 1]:

    path_i = int_0^1 -<grad L_i(theta + s d), d> ds = L_i(theta) - L_i(theta + d)

For the hard loss (cross-entropy of the written tokens) and d = teacher - base, path_i is
exactly log p_teacher(x_i) - log p_base(x_i) (completeness, as in integrated gradients). The
integral is a quadrature: K points on [0, 1], one forward-mode pass each.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from workbench.analyses.param_directions import point_on_line
from workbench.core.errors import ConfigError, unknown_name
from workbench.core.inputs import Inputs
from workbench.engines.alignment_model import AlignmentModel, check_direction
from workbench.engines.objective import Objective, iter_batches
from workbench.engines.per_example import JvpMethod, TokenScores, jvp_scores


def quadrature(points: int, rule: str = "gauss") -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1]: "gauss" (Gauss-Legendre; 1 point = the midpoint) or "left"
    (left Riemann sum; 1 point = the plain score at s = 0).

    >>> nodes, weights = quadrature(2)
    >>> [round(float(x), 4) for x in nodes], weights.tolist()
    ([0.2113, 0.7887], [0.5, 0.5])
    """
    if points < 1:
        raise ConfigError(f"points={points}; the path integral needs at least one point.")
    if rule == "gauss":
        x, w = np.polynomial.legendre.leggauss(points)
        return (x + 1) / 2, w / 2
    if rule == "left":
        return np.arange(points) / points, np.full(points, 1.0 / points)
    raise unknown_name("quadrature rule", rule, ("gauss", "left"))


def path_scores(
    model: AlignmentModel,
    inputs: Inputs,
    direction: Mapping[str, Tensor],
    objective: Objective,
    *,
    points: int = 8,
    rule: str = "gauss",
    at: Mapping[str, Tensor] | None = None,
    batch_size: int = 256,
    progress: bool = False,
    method: JvpMethod = "auto",
    memory_budget_bytes: int | None = None,
) -> TokenScores:
    """Path-integrated alignment along at + s d, s in [0, 1], with `points` quadrature points.
    Its total tends to L_i(at) - L_i(at + d) (exact log-likelihood ratio for the hard loss).
    Holds one point buffer (a model's bytes) and, past `memory_budget_bytes`, a group of keys of
    the tangent at a time (`jvp_scores`)."""
    d = check_direction(model, direction)
    at = dict(model.params if at is None else at)
    nodes, weights = quadrature(points, rule)
    width = inputs.tokens.shape[1] - 1
    per_token = torch.zeros(len(inputs), width, dtype=model.score_dtype)
    point = None  # ONE whole-model buffer, rewritten at every node (not a copy per node)
    for batch in iter_batches(model, objective, inputs, batch_size, progress, f"path alignment (K={points})"):
        acc = 0
        for s, w in zip(nodes, weights):
            point = point_on_line(at, d, float(s), point)
            acc = acc + float(w) * jvp_scores(model, objective, batch, point, d, method, memory_budget_bytes).detach()
        per_token[batch.rows, : acc.shape[1]] = acc.cpu()
    return TokenScores(per_token.sum(-1), per_token)


__all__ = ["path_scores", "quadrature"]
