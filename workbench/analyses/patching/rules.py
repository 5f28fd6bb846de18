"""The rules delta and activation patching share: their settings (`PatchConfig`), which models
they compare (`resolve_models`), when the student's effect is clear enough for a recovered
fraction to be defined, and the unit a summary row reports.

Recovered fraction: (patched - base) / (student - base) in log-odds. It is only defined when the
student's effect is *clearly* above its control's; otherwise it is None ("undefined"), never a
huge ratio from a near-zero denominator. "Clearly" means both
    gain_S = LO(student) - LO(base)  >= min_effect, and
    gain_S - gain_C                  >= min_effect   (gain_C: the control student's gain),
with `min_effect` = 0.5 nats by default (an odds ratio of ~1.65 beyond the control's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.analyses.weights import check_same_init
from workbench.core.errors import ConfigError, unknown_name
from workbench.core.lineage import Lineage
from workbench.trait import Trait, check_trait

DIRECTIONS = ("student->base", "base->student", "control->base")
"""Activation patching's donor->recipient pairs: the recipient runs with the donor's activation at one hook."""


def effect_is_clear(student_gain: float, control_gain: float | None, min_effect: float) -> bool:
    """The student's gain over the base is at least `min_effect` nats, and beats the control's
    gain by at least as much (the control check is skipped when there is no control)."""
    if student_gain < min_effect:
        return False
    return control_gain is None or student_gain - control_gain >= min_effect


def recovered_fraction(log_odds: float, base: float, student: float, defined: bool) -> float | None:
    """(patched - base) / (student - base), or None when the student's effect is not clear."""
    return (log_odds - base) / (student - base) if defined else None


def clear_rule(min_effect: float) -> str:
    """The clear-effect rule in words, recorded beside every result."""
    return (f"recovered fraction defined only if LO(student) - LO(base) >= {min_effect} and exceeds the "
            f"control's LO gain by >= {min_effect} (log-odds, nats)")


MIN_SHARE = 0.1
"""A patch clears its controls in the summary when the student's effect is clear, the patch
recovers at least this fraction of it, and more than every control patch of the same place."""


def summary_units(log_odds: dict[str, float], defined: bool) -> tuple[Callable[[float | None], float | None], str]:
    """(gain in nats -> summary unit, unit label): the recovered fraction when defined, else nats."""
    s_gain = log_odds["student"] - log_odds["base"]
    if defined:
        return (lambda g: None if g is None else g / s_gain), "recovered fraction"
    return (lambda g: g), "log-odds gain (nats)"


def clears_controls(value: float | None, controls: list[float | None], defined: bool) -> bool:
    """Whether a patch clears its controls in the summary (see `MIN_SHARE`)."""
    if not defined or value is None or value < MIN_SHARE:
        return False
    return all(value > c for c in controls if c is not None)


@dataclass
class PatchConfig:
    """Delta and activation patching settings (the trait scored is an argument: a `Trait`).

    student: the model whose effect is localised; base: its reference (default: its parent).
    control: the baseline student (same base, distilled toward no target); None for none.
    min_effect: nats; the "clear effect" margin (see `effect_is_clear`).
    recover: fraction of the student's effect the greedy set must recover.
    greedy: search the greedy set (about n_groups^2 / 2 evaluations; off for a quick table).
    random_control: also patch a norm-matched random delta per group and layer.
    seed: seed of the random deltas.
    engine: delta patching's working model: "auto" (functional when possible), "functional", "bridge".
    hooks: activation patching's hook names (classic TransformerLens names); None = residual
        stream: hook_embed, hook_pos_embed (learned positions only), per layer attn_out,
        resid_mid, mlp_out, resid_post (ln_final.hook_normalized is left out: it is the
        pre-affine normalised final residual, so patching it equals patching the last
        resid_post). Only hooks whose patched value flows on through the stream are accepted
        (`stream_patch.faithful_hooks`: these and blocks.i.hook_resid_pre); resid_mid is written
        through the attention output, which the residual add reads.
    positions: activation patching per position for offsets 0..positions-1 before the answer
        position (0 = the answer position itself); None = every position of the longest prompt.
    progress: show progress (a bar on a terminal, lines elsewhere).
    """

    student: str = "student"
    base: str | None = None
    control: str | None = "control"
    min_effect: float = 0.5
    recover: float = 0.8
    greedy: bool = True
    random_control: bool = True
    seed: int = 0
    engine: str = "auto"
    hooks: tuple[str, ...] | None = None
    positions: int | None = None
    progress: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchConfig:
        d = dict(d)
        if d.get("hooks") is not None:
            d["hooks"] = tuple(d["hooks"])
        return cls(**d)


def resolve_models(lin: Lineage, trait: Trait, cfg: PatchConfig) -> tuple[str, str | None]:
    """(base, control) for `cfg`, after checking the trait fits the models and the models share an init."""
    check_trait(trait, lin.d_vocab, "Patching's trait", single_token=False)
    for name in (cfg.student, cfg.control, cfg.base):
        if name is not None and name not in lin:
            raise unknown_name("model", name, lin.names, fix="Pass PatchConfig(student=..., control=..., base=...).")
    base = cfg.base or lin.parent_of(cfg.student)
    if base is None:
        raise ConfigError(f"{cfg.student!r} has no parent; pass PatchConfig(base=...).")
    for name in (base, cfg.control):
        if name is not None:
            check_same_init(lin, cfg.student, name)
    return base, cfg.control
