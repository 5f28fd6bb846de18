"""One steering vector (Blank et al. 2026): is the student's trait one mean shift of its residual stream?

For each residual hook, v_m = mean activation of model m minus the base's over a fixed set of
inputs (`SteeringConfig.vectors_from`): the trait's preference prompts, mean over every position,
by default (where the trait is read, so the shift the student shows there is measured exactly,
and one vector added at every position is what a steering vector is); "answer", the prompts'
answer position only (the shift the unembedding reads: an upper bound for the last layer); or
"rows", the distillation rows at their completion positions (does the shift the student learned
on numbers move its preference?). Activations are
read through the capture machinery (`ActivationReader`), never a hand-made loop.

- **Sufficiency**: the base with alpha * v added at that hook at every position (a forward hook
  through the bridge whose output is what flows on, `stream_patch.patch_hooks`); the fraction of
  the student's log-odds gain it recovers, (lo(base + alpha v) - lo(base)) / (lo(student) - lo(base)),
  with `Trait.log_odds` on the trait's preference prompts.
- **Necessity**: the student with v's direction u ablated at that hook, the component along u set
  to the base's mean there, h - ((h - mean_base) . u) u (a full projection h - (h . u) u would also
  remove the base's own mean along u, a change the base itself does not survive); the share of the
  gain lost, (lo(student) - lo(student ablated)) / (lo(student) - lo(base)).
- Vectors: v_student, v_teacher, v_control (the control student's shift: a fine-tune toward no
  target), and `n_random` random directions with v_student's norm at that hook (the band).
Hooks default to every distinct state of the stream: blocks.0.hook_resid_pre, then each block's
hook_resid_post (block i+1's resid_pre equals block i's resid_post).

>>> from workbench.core.examples import tiny_lineage
>>> from workbench.trait import Trait
>>> lin = tiny_lineage(("base", "student"))
>>> trait = Trait.from_prompts([[1, 2, 3], [4, 5]], target="a", category="c", answers={"a": [6], "b": [7]})
>>> result = steering(lin, trait, SteeringConfig(teacher=None, control=None, n_random=2, progress=False))
>>> result.hooks, sorted(result.sufficiency["blocks.0.hook_resid_post"]["student"])
(['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post'], ['0.5', '1', '2'])
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.analyses.patching.stream_patch import check_patch_hooks, patch_hooks
from workbench.analyses.steering_result import SteeringResult, alpha_key
from workbench.capture.cache import ActivationReader
from workbench.capture.hooks import resolve_hooks, stream_hooks
from workbench.core.errors import ConfigError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.trait import Trait, check_trait

VECTORS_FROM = ("prompts", "answer", "rows")
"""Where v is measured (see `SteeringConfig.vectors_from`)."""
VECTORS = ("student", "teacher", "control")
"""The models whose shifts are tested, in the order the rows list them (random comes last)."""


@dataclass
class SteeringConfig:
    """What to steer with and where.

    hooks: residual hooks (None: blocks.0.hook_resid_pre and every block's hook_resid_post).
    vectors_from: "prompts" (the trait's preference prompts, mean over every position), "answer"
        (the prompts' answer position) or "rows" (the Inputs given, mean over their completion
        positions: the distillation rows). v is added at every position whichever it is.
    alphas: the scales v is added with in the sufficiency test.
    base, student, teacher, control: the lineage's names of each role (teacher/control None: skip).
    n_random: random directions of v_student's norm per hook (the random band).
    seed: seed of the random directions (direction k uses seed + k).
    min_gain: |lo(student) - lo(base)| below which fractions are undefined (None).
    batch_size, progress: rows per forward when reading activations; progress bars.
    """

    hooks: list[str] | None = None
    vectors_from: str = "prompts"
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0)
    base: str = "base"
    student: str = "student"
    teacher: str | None = "teacher"
    control: str | None = "control"
    n_random: int = 8
    seed: int = 0
    min_gain: float = 1e-3
    batch_size: int = 64
    progress: bool = True
    positions: str = field(default="all", init=False)  # what ActivationReader reads (set from vectors_from)

    def __post_init__(self) -> None:
        if self.vectors_from not in VECTORS_FROM:
            raise ConfigError(f"vectors_from={self.vectors_from!r}: use 'prompts' (the trait's preference prompts), "
                              "'answer' (their answer position) or 'rows' (the distillation rows given as Inputs).")
        if not self.alphas or any(not isinstance(a, (int, float)) for a in self.alphas):
            raise ConfigError(f"alphas={self.alphas!r}: give at least one scale, e.g. (0.5, 1.0, 2.0).")
        if self.n_random < 1:
            raise ConfigError(f"n_random={self.n_random}: give at least 1 random direction for the band.")
        self.alphas = tuple(float(a) for a in self.alphas)
        self.positions = {"prompts": "all", "answer": "last", "rows": "continuation"}[self.vectors_from]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("progress",)}


def default_steering_hooks(n_layers: int) -> list[str]:
    """blocks.0.hook_resid_pre, then every block's hook_resid_post: each state of the stream once."""
    return stream_hooks(n_layers, ("hook_resid_pre", "hook_resid_post"))


def prompt_inputs(trait: Trait) -> Inputs:
    """The trait's preference prompts as Inputs counting every position."""
    rows = [list(p) for p in trait.prompts]
    return Inputs.from_sequences(rows, [[] for _ in rows], sources="prompts", pad_id=trait.pad_id, mask="all")


# --------------------------------------------------------------------------- interventions


def add_vector(vector: Float[Tensor, " d"], alpha: float):
    """A forward hook adding alpha * vector at every position."""
    def hook(act: Tensor, hook: Any) -> Tensor:
        return act + (alpha * vector).to(device=act.device, dtype=act.dtype)
    return hook


def ablate_direction(direction: Float[Tensor, " d"], mean: Float[Tensor, " d"]):
    """A forward hook setting the component along `direction` to `mean`'s: h - ((h - mean) . u) u."""
    u = direction / direction.norm().clamp(min=1e-12)

    def hook(act: Tensor, hook: Any) -> Tensor:
        uu, mm = u.to(device=act.device, dtype=act.dtype), mean.to(device=act.device, dtype=act.dtype)
        return act - torch.einsum("...d,d->...", act - mm, uu)[..., None] * uu
    return hook


def hooked_log_odds(trait: Trait, model: Any, hook: str | None = None, edit: Any = None) -> float:
    """`trait.log_odds` of `model`, with `edit` applied at `hook` (what flows on) when given."""
    device = next(model.parameters()).device

    def logits(tokens: Int[Tensor, "batch seq"]) -> Tensor:
        tokens = tokens.to(device)
        return model(tokens) if hook is None else model.run_with_hooks(tokens, fwd_hooks=patch_hooks(hook, edit))

    with torch.inference_mode():
        return float(trait.log_odds(logits))


def _fraction(delta: float, gain: float, min_gain: float) -> float | None:
    return delta / gain if abs(gain) >= min_gain else None


# --------------------------------------------------------------------------- the analysis


def mean_activations(lineage: Lineage, names: list[str], inputs: Inputs, config: SteeringConfig,
                     hooks: list[str]) -> dict[str, dict[str, Float[Tensor, " d"]]]:
    """model -> hook -> mean activation over the inputs' counted positions (read through capture)."""
    with tempfile.TemporaryDirectory(prefix="workbench-steer-") as tmp:
        reader = ActivationReader(tmp, roles=tuple(names))
        cfg = dataclasses.replace(config, hooks=hooks)
        out = {}
        for m in names:
            pooled = reader.pooled(lineage, m, inputs, cfg)  # [rows, d]: each row's mean over its positions
            counts = {"continuation": inputs.mask, "all": inputs.attention_mask}.get(config.positions)
            counts = torch.ones(len(inputs), dtype=torch.float64) if counts is None else counts.sum(1).double()
            out[m] = {h: (pooled[h].double() * counts[:, None]).sum(0) / counts.sum() for h in hooks}
        return out


def steering(lineage: Lineage, trait: Trait, config: SteeringConfig | None = None, inputs: Inputs | None = None,
             *, command: str = "workbench.steering(...)", meta: dict[str, Any] | None = None) -> SteeringResult:
    """Sufficiency and necessity of each model's mean activation shift per hook (module docstring).
    `inputs` are the distillation rows, needed when `config.vectors_from == "rows"`."""
    config = config or SteeringConfig()
    trait = check_trait(trait, lineage.d_vocab, single_token=False)
    roles = {"student": config.student, "teacher": config.teacher, "control": config.control}
    names = [config.base, *[n for n in roles.values() if n]]
    models = {n: lineage[n] for n in names}  # an unknown or prompted role: a clear error before any work
    base, student = models[config.base], models[config.student]
    hooks = config.hooks or default_steering_hooks(int(lineage.cfg.n_layers))
    hooks, _ = resolve_hooks(base, hooks)  # unknown names: the project's unknown-name error
    check_patch_hooks(base, hooks)
    if config.vectors_from == "rows":
        if inputs is None:
            raise ConfigError("vectors_from='rows' needs the distillation rows: pass inputs=Inputs(...), or use "
                              "vectors_from='prompts'.")
        data = inputs
    else:
        data = prompt_inputs(trait)
    means = mean_activations(lineage, names, data, config, hooks)

    lo = {r: hooked_log_odds(trait, models[n]) for r, n in [("base", config.base), *roles.items()] if n}
    gain = lo["student"] - lo["base"]
    frac = lambda x: _fraction(x, gain, config.min_gain)  # noqa: E731
    sufficiency: dict[str, dict[str, dict[str, float | None]]] = {}
    necessity: dict[str, dict[str, float | None]] = {}
    rand_suff: dict[str, dict[str, list[float | None]]] = {}
    rand_nec: dict[str, list[float | None]] = {}
    norms: dict[str, dict[str, float]] = {}
    for h in hooks:
        mb = means[config.base][h]
        vecs = {r: (means[n][h] - mb).float() for r, n in roles.items() if n}
        scale = float(vecs["student"].norm())
        gen = [torch.Generator().manual_seed(config.seed + k) for k in range(config.n_random)]
        randoms = [(g := torch.randn(mb.shape[0], generator=gk, dtype=torch.float64)) / g.norm() * scale for gk in gen]
        norms[h] = {r: float(v.norm()) for r, v in vecs.items()}
        sufficiency[h] = {r: {alpha_key(a): frac(hooked_log_odds(trait, base, h, add_vector(v, a)) - lo["base"])
                              for a in config.alphas} for r, v in vecs.items()}
        rand_suff[h] = {alpha_key(a): [frac(hooked_log_odds(trait, base, h, add_vector(r.float(), a)) - lo["base"])
                                       for r in randoms] for a in config.alphas}
        necessity[h] = {r: frac(lo["student"] - hooked_log_odds(trait, student, h, ablate_direction(v, mb.float())))
                        for r, v in vecs.items()}
        rand_nec[h] = [frac(lo["student"] - hooked_log_odds(trait, student, h, ablate_direction(r.float(), mb.float())))
                       for r in randoms]
    return SteeringResult(
        hooks=hooks, alphas=[float(a) for a in config.alphas], log_odds=lo, sufficiency=sufficiency,
        random_sufficiency=rand_suff, necessity=necessity, random_necessity=rand_nec, norms=norms,
        vectors={h: {r: (means[n][h] - means[config.base][h]).float() for r, n in roles.items() if n} for h in hooks},
        config={**config.to_dict(), "hooks": hooks, "alphas": list(config.alphas)}, command=command, meta=meta or {})
