"""The distillation loss L_{i,t} per counted next-token position, and batches to evaluate it on.

`Objective` is the loss a student was trained with: hard (cross-entropy of the written tokens,
over the full vocabulary or renormalised over a token set) or soft (KL to the teacher's
renormalised next-token distribution). `restricted_log_probs` is the one log-softmax over a
token set that both the organism's training losses and these scores use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from workbench.core.errors import ConfigError, DataError, unknown_name
from workbench.core.inputs import Inputs
from workbench.core.progress import progress_bar
from workbench.engines.tangent import written_index

if TYPE_CHECKING:
    from workbench.engines.alignment_model import AlignmentModel, Params
    from workbench.engines.teacher import TeacherLogits

LossKind = Literal["hard", "soft"]
LOSS_KINDS = ("hard", "soft")


def restricted_log_probs(logits: Float[Tensor, "... vocab"], ids: Tensor | None) -> Float[Tensor, "... k"]:
    """Log-probabilities renormalised over the token ids `ids` (all tokens when None), in float32
    at least: half precision is promoted to float32, float64 stays float64 (the organism trains
    in float32, where this is the plain float32 log-softmax)."""
    sub = logits if ids is None else logits.index_select(-1, ids)
    return F.log_softmax(sub.to(torch.promote_types(sub.dtype, torch.float32)), dim=-1)


@dataclass
class Objective:
    """The distillation loss L_{i,t} at each counted next-token position.

    kind: "hard" = cross-entropy of the written next token (renormalised over `ids` when given:
        the organism's hard-label student loss); "soft" = KL(teacher || model) over the
        next-token distribution renormalised over `ids` (the organism's soft loss).
    ids: token ids the distributions are renormalised over (None: full vocabulary, for the hard
        loss the exact text likelihood, whose path integral is the log-likelihood ratio).
    teacher: soft only: the teacher's clean parameters, or its logits on the rows
        (`workbench.engines.teacher`, e.g. a prompted teacher with no weights): the targets.
    """

    kind: LossKind = "hard"
    ids: Int[Tensor, " k"] | None = None
    teacher: Params | TeacherLogits | None = None

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise unknown_name("loss", self.kind, LOSS_KINDS)
        if self.kind == "soft" and self.teacher is None:
            raise ConfigError("The soft loss needs the teacher (teacher=its parameters or its logits) for its targets.")

    def targets(self, model: AlignmentModel, tokens: Int[Tensor, "batch seq"], mask: Tensor | None = None) -> Tensor | None:
        """Soft: the teacher's renormalised next-token log-probs [batch, seq-1, k]. Hard: None, or
        with `ids` the written tokens' index in `ids` [batch, seq-1] (-1 outside; an error where counted)."""
        if self.kind == "hard":
            if self.ids is None:
                return None
            return written_index(tokens, self.ids, mask)
        with torch.no_grad():
            ids = None if self.ids is None else self.ids.to(tokens.device)
            if isinstance(self.teacher, Mapping):
                logits = model.logits(self.teacher, tokens)
            else:
                logits = self.teacher.logits(tokens, mask)
            return restricted_log_probs(logits[:, :-1], ids)

    def per_token(
        self,
        logits: Float[Tensor, "batch seq vocab"],
        tokens: Int[Tensor, "batch seq"],
        mask: Float[Tensor, "batch seq_1"],
        targets: Tensor | None,
    ) -> Float[Tensor, "batch seq_1"]:
        """L_{i,t} at positions t = 0..seq-2 (position t predicts token t+1), zero where not counted."""
        if self.kind == "hard" and self.ids is None:
            logp = restricted_log_probs(logits[:, :-1], None)
            loss = -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
        elif self.kind == "hard":  # renormalised over ids; `targets` holds the written tokens' index there
            logp = restricted_log_probs(logits[:, :-1], self.ids.to(tokens.device))
            loss = -logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
        else:
            ids = None if self.ids is None else self.ids.to(tokens.device)
            logp = restricted_log_probs(logits[:, :-1], ids)
            loss = (targets.exp() * (targets - logp)).sum(-1)
        return loss * mask


@dataclass
class Batch:
    """One batch on the model's device: tokens, next-token mask (float), soft targets."""

    tokens: Int[Tensor, "batch seq"]
    mask: Float[Tensor, "batch seq_1"]
    targets: Tensor | None
    rows: slice


def iter_batches(
    model: AlignmentModel, objective: Objective, inputs: Inputs, batch_size: int, progress: bool = False, desc: str = ""
) -> Iterator[Batch]:
    """Batches of `inputs` (pad columns trimmed) with the objective's targets."""
    if len(inputs) == 0:
        raise DataError("No rows to score; pass Inputs with at least one row.")
    inputs.validate(model.lineage.d_vocab, model.lineage.n_ctx)
    dev = model.device
    n_batches = -(-len(inputs) // batch_size)
    for b, part in enumerate(progress_bar(inputs.batches(batch_size), total=n_batches, desc=desc, enabled=progress)):
        tokens = part.tokens.to(dev)
        mask = part.next_token_mask().to(dev, model.dtype)
        yield Batch(tokens, mask, objective.targets(model, tokens, mask), slice(b * batch_size, b * batch_size + len(part)))


def per_token_losses(
    model: AlignmentModel, params: Mapping[str, Tensor], objective: Objective, batch: Batch
) -> Float[Tensor, "batch seq_1"]:
    """L_{i,t} of one batch at `params` (differentiable in `params`)."""
    return objective.per_token(model.logits(params, batch.tokens), batch.tokens, batch.mask, batch.targets)


def sequence_losses(
    model: AlignmentModel, inputs: Inputs, objective: Objective,
    params: Mapping[str, Tensor] | TeacherLogits | None = None, batch_size: int = 256,
) -> Float[Tensor, " n"]:
    """L_i for every row at `params` (default: the model's own), or under a teacher's logits on
    the rows (`workbench.engines.teacher`: e.g. a prompted teacher), no gradients."""
    params = model.params if params is None else params
    out = torch.empty(len(inputs), dtype=model.score_dtype)
    with torch.no_grad():
        for batch in iter_batches(model, objective, inputs, batch_size):
            if isinstance(params, Mapping):
                losses = per_token_losses(model, params, objective, batch)
            else:
                logits = params.logits(batch.tokens, batch.mask)
                losses = objective.per_token(logits, batch.tokens, batch.mask, batch.targets)
            out[batch.rows] = losses.sum(-1).cpu()
    return out


__all__ = ["Batch", "LOSS_KINDS", "LossKind", "Objective", "iter_batches", "per_token_losses", "restricted_log_probs",
           "sequence_losses"]
