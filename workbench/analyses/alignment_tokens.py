"""The per-token view of the alignment analysis: a_{i,t} per counted position (teacher rows minus
base rows), beside where teacher and base diverge (per-position log-likelihood ratio and KL), and
the written tokens whose likelihood ratio is largest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.analyses.alignment_stats import as_float64, correlation, diff_of_means
from workbench.core.inputs import Inputs
from workbench.engines.alignment_model import AlignmentModel, Params
from workbench.engines.objective import Objective, restricted_log_probs
from workbench.engines.per_example import alignment_scores
from workbench.engines.teacher import TeacherLogits


@dataclass
class TokenView:
    """The per-token tables of `AlignmentResult` (see its fields), and the largest relative gap
    between the jvp totals and the per-group sums of the same scores (a consistency check)."""

    positions: list[int]
    token_diff: dict[str, list[float]]
    token_reference: dict[str, list[float]]
    token_table: list[dict[str, Any]]
    token_correlation: dict[str, float | None]
    jvp_gap: float


def token_view(
    model: AlignmentModel, data: Inputs, labels: Tensor, directions: Mapping[str, Params], objective: Objective,
    totals: Mapping[str, Tensor], teacher: TeacherLogits | None, tokenizer: Any, *, batch_size: int, progress: bool,
    memory_budget_bytes: int | None = None,
) -> TokenView:
    """a_{i,t} by one jvp per batch for each direction (split by groups of keys past
    `memory_budget_bytes`); `totals` are the same directions' a_i from the per-group scores, to
    measure the jvp gap."""
    counted = data.next_token_mask().any(0).nonzero().flatten().tolist()
    token_diff: dict[str, list[float]] = {}
    per_token: dict[str, Tensor] = {}
    jvp_gap = 0.0
    for name, d in directions.items():
        ts = alignment_scores(model, data, d, objective, batch_size=batch_size, progress=progress,
                              memory_budget_bytes=memory_budget_bytes)
        per_token[name] = ts.per_token
        ref = totals[name]
        jvp_gap = max(jvp_gap, float((ts.total - ref).abs().max() / ref.abs().max().clamp(min=1e-30)))
        token_diff[name] = diff_of_means(ts.per_token[:, counted], labels)[0].tolist()
    token_reference: dict[str, list[float]] = {}
    if teacher is None:
        return TokenView(counted, token_diff, token_reference, [], {}, jvp_gap)
    with torch.no_grad():
        llr, kl = per_position_reference(model, data, teacher, batch_size)
    token_reference["log p_T/p_base per token (teacher - base rows)"] = diff_of_means(llr[:, counted], labels)[0].tolist()
    token_reference["KL(teacher || base) on teacher rows"] = kl[labels.bool()][:, counted].mean(0).tolist()
    table, corr = token_table(data, labels, llr, per_token, tokenizer)
    return TokenView(counted, token_diff, token_reference, table, corr, jvp_gap)


def token_table(
    data: Inputs, labels: Tensor, llr: Float[Tensor, "n seq_1"], per_token: Mapping[str, Tensor], tokenizer: Any,
    top: int = 10, min_count: int = 5,
) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """Written tokens (seen >= `min_count` times) ranked by mean per-token log-likelihood ratio on
    teacher rows, with their mean per-token alignment per direction; and the correlation of
    a_{i,t} with that ratio over every counted position."""
    mask = data.next_token_mask()
    nxt = data.tokens[:, 1:]
    pos_mask = mask & labels.bool()[:, None]
    ids, counts = nxt[pos_mask].unique(return_counts=True)
    rows = []
    for t, c in zip(ids.tolist(), counts.tolist()):
        if c < min_count:
            continue
        where = pos_mask & (nxt == t)
        row = {"token": tokenizer.decode([t]) if tokenizer is not None else str(t), "id": t, "count": c,
               "mean_log_ratio": float(llr[where].mean())}
        row.update({f"mean_a/{n}": float(v[where].mean()) for n, v in per_token.items()})
        rows.append(row)
    rows.sort(key=lambda r: -r["mean_log_ratio"])
    flat = as_float64(llr[mask])
    corr = {n: correlation(as_float64(v[mask]), flat) for n, v in per_token.items()}
    return rows[:top], corr


def per_position_reference(
    model: AlignmentModel, data: Inputs, teacher: TeacherLogits, batch_size: int
) -> tuple[Float[Tensor, "n seq_1"], Float[Tensor, "n seq_1"]]:
    """Per position: log p_T - log p_base of the written next token, and KL(teacher || base) of
    the full next-token distributions (the teacher's logits on the rows: its weights, or the base
    under its system prompt)."""
    width = data.tokens.shape[1] - 1
    llr = torch.zeros(len(data), width, dtype=torch.float64)
    kl = torch.zeros(len(data), width, dtype=torch.float64)
    for lo in range(0, len(data), batch_size):
        tokens = data.tokens[lo : lo + batch_size].to(model.device)
        lb = restricted_log_probs(model.logits(model.params, tokens)[:, :-1], None)
        lt = restricted_log_probs(teacher.logits(tokens)[:, :-1], None)
        nxt = tokens[:, 1:, None]
        llr[lo : lo + len(tokens)] = (lt.gather(-1, nxt) - lb.gather(-1, nxt)).squeeze(-1).double().cpu()
        kl[lo : lo + len(tokens)] = (lt.exp() * (lt - lb)).sum(-1).double().cpu()
    return llr, kl


__all__ = ["TokenView", "per_position_reference", "token_table", "token_view"]
