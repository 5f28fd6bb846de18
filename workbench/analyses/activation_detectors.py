"""Teacher-free row detectors read from the base's residual stream along the trait direction
(what a defender holding the base and the trait can run).

- **The trait direction** v at a hook, measured on the base since a defender holds no teacher:
  - "contrast": the base's mean activation at the answer of the trait's preference prompts
    answered with the target, minus answered with the category's other members
    (`contrast_prompts`): Chen et al.'s persona vector;
  - "gradient": the gradient of the base's log P(target) on the preference prompts with respect
    to a steering vector added at the hook at every position (the direction that raises the
    preference fastest: a steering vector by construction), scaled to the contrast vector's norm.
- **The hook** (`choose_trait_hook`): among blocks.0.hook_resid_pre and every hook_resid_post,
  the one where adding v (alpha 1, every position) raises the base's log-odds of the target most,
  as Chen et al. pick the layer by steering. Label-free: no distillation row is read.
- **persona_projection** (Chen et al.'s projection difference): a row's mean projection on v
  over its completion positions, minus the same for the base's own answers to the row's prompt
  (its numbers resampled by the base, 4 answers averaged, the row's other tokens kept): how far
  the row sits along the trait beyond what the base would have written.
- **activation_gradient** (Blank et al.): the cosine between v and -dL_i/ds, the row's gradient
  on a steering vector s added at the hook at every position (the sum over positions of the
  loss's activation gradient; L_i the hard loss over the channel, as g_trait): whether one step
  on the row moves the stream along the trait.
- Controls: both scores along `n_random` random unit directions at the same hook
  (`persona_random_<k>`, `activation_gradient_random_<k>`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.analyses.steering import add_vector, default_steering_hooks, hooked_log_odds
from workbench.capture.cache import ActivationReader, contrast_prompts
from workbench.capture.hooks import resolve_hooks
from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.trait import Trait

ACTIVATION_DETECTORS = ("persona_projection", "activation_gradient")
TRAIT_DIRECTIONS = ("contrast", "gradient")
CONTROL_PREFIX = {"persona_projection": "persona_random_", "activation_gradient": "activation_gradient_random_"}
"""The name prefix of each detector's random-direction controls."""


@dataclass
class _Read:
    """Read settings for `ActivationReader` (hooks, positions, rows per forward, progress)."""

    hooks: list[str]
    positions: str
    batch_size: int = 256
    progress: bool = False


@dataclass
class TraitHook:
    """The hook the activation detectors read, the base's trait direction per candidate hook and
    the log-odds gain adding it gave (the choice)."""

    hook: str
    directions: dict[str, Float[Tensor, " d"]]
    steering_gain: dict[str, float]
    kind: str = "contrast"

    def to_dict(self) -> dict[str, Any]:
        return {"hook": self.hook, "direction": self.kind, "steering_gain": self.steering_gain,
                "direction_norm": {h: float(v.norm()) for h, v in self.directions.items()}}


def base_trait_directions(lineage: Lineage, trait: Trait, hooks: Sequence[str], base: str = "base",
                          batch_size: int = 256) -> dict[str, Float[Tensor, " d"]]:
    """Per hook: the base's mean activation at the answer of target-answered preference prompts
    minus other-answered ones."""
    prompts = contrast_prompts(trait)
    if bool(prompts.labels.all()) or not bool(prompts.labels.any()):
        raise DataError("The trait direction needs preference prompts answered with the target and with other members "
                        f"of {trait.category!r}; give the trait at least one other answer.")
    acts = ActivationReader(roles=(base,)).last_token(lineage, base, prompts, _Read(list(hooks), "last", batch_size))
    return {h: (a[prompts.labels].double().mean(0) - a[~prompts.labels].double().mean(0)).float() for h, a in acts.items()}


@contextmanager
def frozen_parameters(model: torch.nn.Module) -> Iterator[None]:
    """No parameter of `model` requires grad inside (gradients reach activations only, without
    building the parameters' graph); the flags are restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def base_gradient_directions(lineage: Lineage, trait: Trait, hooks: Sequence[str],
                             base: str = "base") -> dict[str, Float[Tensor, " d"]]:
    """Per hook: d log P(target) / d s on the base, s a steering vector added at the hook at every
    position of the preference prompts."""
    model = lineage[base]
    device = next(model.parameters()).device
    out = {}
    with frozen_parameters(model), torch.enable_grad():
        for h in hooks:
            s = torch.zeros(int(lineage.cfg.d_model), device=device, requires_grad=True)
            logits = lambda t, h=h, s=s: model.run_with_hooks(t, fwd_hooks=[(h, lambda a, hook: a + s.to(a.dtype))])  # noqa: E731
            (g,) = torch.autograd.grad(trait.log_prob(logits, device), s)
            out[h] = g.detach().float().cpu()
    return out


def choose_trait_hook(lineage: Lineage, trait: Trait, base: str = "base", hooks: Sequence[str] | None = None,
                      batch_size: int = 256, direction: str = "contrast") -> TraitHook:
    """The candidate hook where adding the base's trait direction raises the base's log-odds of
    the target most (module docstring)."""
    if direction not in TRAIT_DIRECTIONS:
        raise ConfigError(f"trait direction {direction!r}: use 'contrast' (Chen et al.'s persona vector) or 'gradient' "
                          "(the base's log P(target) gradient on a steering vector).")
    model = lineage[base]
    candidates = list(hooks) if hooks else default_steering_hooks(int(lineage.cfg.n_layers))
    candidates, _ = resolve_hooks(model, candidates)
    bad = [h for h in candidates if not h.endswith(("hook_resid_pre", "hook_resid_post"))]
    if bad:
        raise ConfigError(f"The activation detectors read residual-stream hooks; {bad[0]!r} is not one "
                          "(use blocks.i.hook_resid_pre or blocks.i.hook_resid_post).")
    directions = base_trait_directions(lineage, trait, candidates, base, batch_size)
    if direction == "gradient":
        grads = base_gradient_directions(lineage, trait, candidates, base)
        directions = {h: g * (directions[h].norm() / g.norm().clamp(min=1e-30)) for h, g in grads.items()}
    plain = hooked_log_odds(trait, model)
    gain = {h: hooked_log_odds(trait, model, h, add_vector(v, 1.0)) - plain for h, v in directions.items()}
    return TraitHook(max(gain, key=gain.__getitem__), directions, gain, direction)


def random_unit_directions(d: int, k: int, seed: int) -> Float[Tensor, "k d"]:
    g = torch.randn(k, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (g / g.norm(dim=1, keepdim=True)).float()


@torch.no_grad()  # not inference mode: the rewritten rows may be differentiated through later
def base_answers(model: Any, tokens: Int[Tensor, "n seq"], where: torch.Tensor, ids: Sequence[int],
                 batch_size: int = 256, seed: int | None = None) -> Int[Tensor, "n seq"]:
    """The rows with the tokens at `where` rewritten, left to right, by the model among `ids`
    given everything before (the rows' other tokens kept): sampled at temperature 1 with `seed`,
    or its greedy choice when `seed` is None."""
    device = next(model.parameters()).device
    allowed = torch.as_tensor(list(ids), dtype=torch.long).to(device)
    # one uniform per position drawn up front: a row's sample does not depend on how rows are batched
    uniform = None if seed is None else torch.rand(tokens.shape, generator=torch.Generator().manual_seed(seed),
                                                   dtype=torch.float64)
    out = tokens.clone()
    for lo in range(0, len(tokens), batch_size):
        t, w = out[lo: lo + batch_size].to(device), where[lo: lo + batch_size].to(device)
        for p in torch.nonzero(w.any(0)).flatten().tolist():
            if p == 0:
                raise DataError("A row's first token is marked to rewrite; the base's answer needs a prompt before it.")
            logits = model(t[:, :p])[:, -1].float().index_select(-1, allowed)
            if uniform is None:
                col = logits.argmax(-1)
            else:  # inverse-CDF sampling at temperature 1
                cdf = logits.double().softmax(-1).cumsum(-1)
                u = uniform[lo: lo + batch_size, p].to(device)[:, None] * cdf[:, -1:]
                col = torch.searchsorted(cdf, u).clamp(max=len(allowed) - 1)[:, 0]
            t[:, p] = torch.where(w[:, p], allowed[col], t[:, p])
        out[lo: lo + batch_size] = t.cpu()
    return out


def persona_projection_scores(lineage: Lineage, rows: Inputs, trained: torch.Tensor, movable_ids: Sequence[int],
                              hook: str, directions: Float[Tensor, "k d"], base: str = "base", answers: int = 4,
                              seed: int = 0, batch_size: int = 256) -> Float[Tensor, "k n"]:
    """Per direction: each row's mean projection over its completion positions minus the mean of
    the same over `answers` answers the base samples to its prompt (`base_answers` at the row's
    trained positions; sampled, not greedy: a small base's greedy answer locks into repeats, a
    baseline that varies more from prompt to prompt than the rows do)."""
    if answers < 1:
        raise ConfigError(f"answers={answers}: the projection difference needs at least 1 base answer per row.")
    reader = ActivationReader(roles=(base,))
    settings = _Read([hook], "continuation", batch_size)
    unit = (directions / directions.norm(dim=1, keepdim=True).clamp(min=1e-12)).double()
    own = reader.pooled(lineage, base, rows, settings)[hook].double()
    theirs = torch.zeros_like(own)
    for k in range(answers):
        answered = replace(rows, tokens=base_answers(lineage[base], rows.tokens.cpu(), trained, movable_ids, batch_size,
                                                     seed=seed * 1000 + k))
        theirs += reader.pooled(lineage, base, answered, settings)[hook].double() / answers
    return unit @ (own - theirs).T


def activation_gradient_scores(lineage: Lineage, rows: Inputs, channel_ids: Sequence[int] | None, hook: str,
                               directions: Float[Tensor, "k d"], base: str = "base",
                               batch_size: int = 256) -> Float[Tensor, "k n"]:
    """Per direction: the cosine between it and -dL_i/ds, the row's gradient on a steering vector
    added at `hook` at every position (L_i: the hard loss over the channel at the rows' counted
    positions)."""
    from workbench.engines.objective import Objective

    model = lineage[base]
    device = next(model.parameters()).device
    objective = Objective("hard", ids=None if channel_ids is None else torch.tensor(list(channel_ids)))
    unit = (directions / directions.norm(dim=1, keepdim=True).clamp(min=1e-12)).double()
    out = torch.empty(len(directions), len(rows), dtype=torch.float64)
    seen: dict[str, Tensor] = {}

    def leaf(act: Tensor, hook: Any) -> Tensor:  # the stream from here on starts at a leaf we differentiate
        seen["act"] = act.detach().requires_grad_(True)
        return seen["act"]

    with frozen_parameters(model):
        done = 0
        for part in rows.batches(batch_size):
            tokens = part.tokens.to(device)
            mask = part.next_token_mask().to(device, torch.float32)
            with torch.enable_grad():
                logits = model.run_with_hooks(tokens, fwd_hooks=[(hook, leaf)])
                loss = objective.per_token(logits, tokens, mask, objective.targets(None, tokens, mask)).sum()
                (grad,) = torch.autograd.grad(loss, seen.pop("act"))
            push = -grad.double().sum(1).cpu()  # [batch, d]: the gradient on a vector added at every position
            cos = (push @ unit.T) / push.norm(dim=1, keepdim=True).clamp(min=1e-30)
            out[:, done: done + len(part)] = cos.T
            done += len(part)
    return out


def activation_scores(lineage: Lineage, rows: Inputs, trained: torch.Tensor, trait: Trait, detectors: Sequence[str],
                      channel_ids: Sequence[int] | None, movable_ids: Sequence[int], *, base: str = "base",
                      hook: TraitHook | None = None, n_random: int = 3, seed: int = 0,
                      batch_size: int = 256) -> dict[str, Tensor]:
    """The asked activation detectors' scores per row (float64), each followed by its random
    controls at the same hook."""
    unknown = sorted(set(detectors) - set(ACTIVATION_DETECTORS))
    if unknown:
        raise ConfigError(f"Unknown activation detectors {unknown}; choose from {list(ACTIVATION_DETECTORS)}.")
    hook = hook or choose_trait_hook(lineage, trait, base, batch_size=batch_size)
    v = hook.directions[hook.hook]
    if float(v.norm()) == 0:
        raise DataError(f"The base's trait direction at {hook.hook} is zero: the target's answers read as the others'.")
    directions = torch.cat([v[None].float(), random_unit_directions(len(v), n_random, seed * 1000 + 7)])
    out: dict[str, Tensor] = {}
    for name in detectors:
        if name == "persona_projection":
            s = persona_projection_scores(lineage, rows, trained, movable_ids, hook.hook, directions, base,
                                          seed=seed, batch_size=batch_size)
        else:
            s = activation_gradient_scores(lineage, rows, channel_ids, hook.hook, directions, base, batch_size)
        out[name] = s[0]
        out.update({f"{CONTROL_PREFIX[name]}{k}": s[k + 1] for k in range(n_random)})
    return out


__all__ = ["ACTIVATION_DETECTORS", "CONTROL_PREFIX", "TRAIT_DIRECTIONS", "TraitHook", "base_gradient_directions",
           "frozen_parameters", "activation_gradient_scores", "activation_scores",
           "base_answers", "base_trait_directions", "choose_trait_hook", "persona_projection_scores"]
