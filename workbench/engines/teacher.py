"""The teacher as its next-token logits on the rows: the one seam between analyses that need
only the teacher's predictions and where those come from.

`TeacherLogits` is `logits(tokens) -> [batch, seq, vocab]`, aligned with the rows' positions,
plus `params` (the teacher's clean parameters, or None when it has no weights of its own) and a
`meta` dict for the record. Two kinds:
- `WeightTeacher`: a lineage model with weights (the model's forward at the teacher's params);
- `PromptedTeacher`: the base under a system prompt (`workbench.core.prompted`): the base's
  forward at the base's own params on the system-prompted rows, outputs aligned back.
The likelihood-ratio oracle, the soft loss's targets and the per-position divergence read a
`TeacherLogits`; what needs ΔT (directions, the path integral) reads `params` and says why it is
absent when it is None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jaxtyping import Float, Int
from torch import Tensor

from workbench.core.errors import DataError
from workbench.core.prompted import WEIGHTS_NOTE, PromptedRole

if TYPE_CHECKING:
    from workbench.engines.alignment_model import AlignmentModel, Params


@dataclass
class WeightTeacher:
    """A teacher with weights: `model.logits(params, tokens)`."""

    model: AlignmentModel
    params: Params | None
    name: str = "teacher"
    meta: dict[str, Any] = field(default_factory=dict)

    def logits(self, tokens: Int[Tensor, "batch seq"], mask: Tensor | None = None) -> Float[Tensor, "batch seq vocab"]:
        assert self.params is not None
        return self.model.logits(self.params, tokens)


@dataclass
class PromptedTeacher:
    """The base under a system prompt: the base's forward (its own parameters, `base_params`;
    the bridge is the base's, shared) on each row with its base prefix swapped for the teacher's
    (or the teacher prefix prepended), logits moved back to the row's positions. Positions inside
    a swapped base prefix are zeros; counting them in a mask is refused (`check_mask`)."""

    model: AlignmentModel
    role: PromptedRole
    base_params: Params
    name: str = "teacher"
    params: None = None

    @property
    def meta(self) -> dict[str, Any]:
        return {**self.role.meta(), "weights": WEIGHTS_NOTE.format(name=self.name) + ": analyses of its weights are left out"}

    def row_kinds(self, tokens: Int[Tensor, "batch seq"]) -> dict[str, int]:
        """How many rows start with the base prefix (swapped for the teacher's) and how many get
        the teacher prefix prepended: what the record says of the rows scored."""
        swapped = self.role.prefix.inputs(tokens[:, : len(self.role.prefix.base_prefix) + 1]).swapped
        return {"rows_swapped": int(swapped.sum()), "rows_prepended": int((~swapped).sum())}

    def logits(self, tokens: Int[Tensor, "batch seq"], mask: Tensor | None = None) -> Float[Tensor, "batch seq vocab"]:
        return prompted_logits(lambda t: self.model.logits(self.base_params, t), self.role, tokens,
                               self.model.lineage.n_ctx, mask)


def prompted_logits(
    forward: Callable[[Tensor], Tensor], role: PromptedRole, tokens: Int[Tensor, "batch seq"], n_ctx: int,
    mask: Tensor | None = None, pad_id: int = 0,
) -> Float[Tensor, "batch seq vocab"]:
    """A prompted role's logits at the rows' positions: `forward` (the base's: tokens -> logits)
    on the system-prompted rows, aligned back (zeros inside a swapped base prefix). `mask`: the
    next-token positions that will be counted (one inside a swapped base prefix is refused).
    `PromptedTeacher.logits` and `ActivationReader.log_prob` (the probes' oracle) both go here."""
    batch = role.prefix.inputs(tokens, pad_id=pad_id)
    if batch.tokens.shape[1] > n_ctx:
        raise DataError(f"With the system prompt's {len(role.prefix.teacher_prefix)} prefix tokens the "
                        f"teacher's rows are {batch.tokens.shape[1]} tokens, longer than the context ({n_ctx}). "
                        "Use shorter rows or a shorter system prompt.")
    if mask is not None:
        batch.check_mask(mask)
    return batch.align(forward(batch.tokens), tokens.shape[1])


TeacherLogits = WeightTeacher | PromptedTeacher


def teacher_logits(model: AlignmentModel, name: str) -> TeacherLogits | None:
    """The teacher `name` of `model.lineage` as logits on rows: a `PromptedTeacher` when it is a
    prompted role (sharing `model`'s base params when its base is the model's), a
    `WeightTeacher` when it is a model, None when the lineage has neither."""
    lineage = model.lineage
    if lineage.is_prompted(name):
        role = lineage.prompted[name]
        params = model.params if role.base == model.name else model.params_of(role.base)
        return PromptedTeacher(model, role, params, name=name)
    if name in lineage:
        return WeightTeacher(model, model.params_of(name), name=name)
    return None


__all__ = ["PromptedTeacher", "TeacherLogits", "WeightTeacher", "prompted_logits", "teacher_logits"]
