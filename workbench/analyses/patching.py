"""Causal localisation: which parameter groups and which activations carry the inherited trait.

Two analyses, both scored with a `Trait` in log-odds of P(target) at the answer position of
the trait's prompts (mean P over prompts, then log-odds, as `Trait.score` does):

- **Delta patching** (`delta_patching`): the base with the student's weights in a set G of
  parameter groups (= base + ΔS restricted to G), for every single group, every layer (the
  embeddings and the final norm + unembedding count as layers of their own), and leave-one-out
  (the student with the base's weights in one group, i.e. ΔS_g removed); then a greedy set of
  groups, grown one best group at a time, until it recovers >= `recover` (80%) of the effect.
  Controls beside every number: the control student's delta in the same groups, and a random
  delta norm-matched to ΔS key by key.
- **Activation patching** (`activation_patching`): the base run on the trait prompts with one
  hook's activation replaced by the student's (student -> base, "denoising"), and the reverse
  (base -> student, "noising"), per hook over all positions and per position; the control's
  activations patched into the base give each hook's control effect.

Recovered fraction: (patched - base) / (student - base) in log-odds. It is only defined when the
student's effect is *clearly* above its control's; otherwise it is None ("undefined"), never a
huge ratio from a near-zero denominator. "Clearly" means both
    gain_S = LO(student) - LO(base)  >= min_effect, and
    gain_S - gain_C                  >= min_effect   (gain_C: the control student's gain),
with `min_effect` = 0.5 nats by default (an odds ratio of ~1.65 beyond the control's).
In the noising direction the same fraction says how much of the effect *remains* once the
hook's activation is the base's: a low value there means the hook is necessary.

Patched weights are taken whole from the donor model (`w = student[k] if k in G else base[k]`),
so patching every group reproduces the student bit for bit and patching none the base. The
delta sweep loads each patched state into ONE working model and never rebuilds a bridge: by
default (`engine="auto"`) a `FunctionalModel` (a pure function of the clean state dict; a new
patched state is one dict update, ~3x faster than the hooked bridge per evaluation here), or
`engine="bridge"`: a working copy (`Lineage.copy_model`) whose live parameters are overwritten
in place (only the keys that changed since the last evaluation). `python -m workbench.bench
patching` times both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from workbench.capture.hooks import patching_hooks
from workbench.core.errors import ConfigError, unknown_name
from workbench.core.lineage import Lineage
from workbench.core.models import copy_model, resolve_device
from workbench.core.params import ParamGroup, param_space
from workbench.results.base import ResultBase
from workbench.results.figures import layer_component_grid
from workbench.results.rows import SummaryRow
from workbench.trait import LogitsFn, Trait
from workbench.analyses.weights import check_same_init

ENGINES = ("auto", "functional", "bridge")


# --------------------------------------------------------------------------- shared rules


def effect_is_clear(student_gain: float, control_gain: float | None, min_effect: float) -> bool:
    """The student's gain over the base is at least `min_effect` nats, and beats the control's
    gain by at least as much (the control check is skipped when there is no control)."""
    if student_gain < min_effect:
        return False
    return control_gain is None or student_gain - control_gain >= min_effect


def recovered_fraction(log_odds: float, base: float, student: float, defined: bool) -> float | None:
    """(patched - base) / (student - base), or None when the student's effect is not clear."""
    return (log_odds - base) / (student - base) if defined else None


def _on(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether the model's parameters are on `device` ("cuda" matches any CUDA index)."""
    d = next(model.parameters()).device
    return d.type == device.type and (device.index is None or d.index == device.index)


def clear_rule(min_effect: float) -> str:
    return (f"recovered fraction defined only if LO(student) - LO(base) >= {min_effect} and exceeds the "
            f"control's LO gain by >= {min_effect} (log-odds, nats)")


MIN_SHARE = 0.1
"""A patch clears its controls in the summary when the student's effect is clear, the patch
recovers at least this fraction of it, and more than every control patch of the same place."""


def _units(log_odds: dict[str, float], defined: bool) -> tuple[Callable[[float | None], float | None], str]:
    """(gain in nats -> summary unit, unit label): the recovered fraction when defined, else nats."""
    s_gain = log_odds["student"] - log_odds["base"]
    if defined:
        return (lambda g: None if g is None else g / s_gain), "recovered fraction"
    return (lambda g: g), "log-odds gain (nats)"


def _clears(value: float | None, controls: list[float | None], defined: bool) -> bool:
    if not defined or value is None or value < MIN_SHARE:
        return False
    return all(value > c for c in controls if c is not None)


# --------------------------------------------------------------------------- weight mixing


class PatchedModels:
    """A metric (the trait's log-odds: `Trait.log_odds`) of models assembled key by key from the
    lineage's weights.

    Every evaluation takes a full clean state (canonical key -> tensor) and scores it in one
    working model: a `FunctionalModel` (engine "functional") or a copy of the base bridge whose
    live parameters are overwritten in place (engine "bridge"). States of lineage models are
    cached on `device`. Models with tied weights (`Lineage.aliases`) use the bridge: a state
    swap in the functional model would leave the tied copy behind.
    """

    def __init__(self, lin: Lineage, base: str, metric: Callable[[LogitsFn], float], *, engine: str = "auto",
                 device: str | torch.device | None = None):
        if engine not in ENGINES:
            raise unknown_name("engine", engine, ENGINES)
        self.lin, self.metric = lin, metric
        self.device = resolve_device(device) if device is not None else lin.device
        self._states: dict[str, dict[str, Tensor]] = {}
        self.evaluations = 0
        if engine == "functional" and lin.aliases:
            raise ConfigError(f"engine='functional' cannot patch tied weights ({sorted(lin.aliases)}); use engine='bridge'.")
        if engine in ("auto", "functional") and not lin.aliases:
            from workbench.engines.functional import FunctionalModel

            try:
                fm = FunctionalModel.from_bridge(lin[base])
            except ConfigError:
                if engine == "functional":
                    raise
            else:
                fm.w = {k: v.to(self.device) for k, v in fm.w.items()}
                self._fm, self.engine = fm, "functional"
                return
        work = lin.copy_model(base)
        if not _on(work, self.device):
            work = copy_model(work, device=self.device)
        self._work, self.engine = work, "bridge"
        self._live = param_space(work).params
        self._loaded: dict[str, Tensor] = {}

    def state(self, name: str) -> dict[str, Tensor]:
        if name not in self._states:
            self._states[name] = {k: v.to(self.device) for k, v in self.lin.state(name).items()}
        return self._states[name]

    def mix(self, donor: str, recipient: str, keys: set[str]) -> dict[str, Tensor]:
        """The recipient's state with the donor's weights on `keys` (tensors shared, not copied)."""
        d, r = self.state(donor), self.state(recipient)
        return {k: (d[k] if k in keys else r[k]) for k in r}

    @torch.no_grad()
    def log_odds(self, state: Mapping[str, Tensor]) -> float:
        self.evaluations += 1
        if self.engine == "functional":
            from workbench.engines.functional import FunctionalModel

            fm = self._fm
            patched = FunctionalModel({**fm.w, **state}, fm.n_layers, fm.n_heads, fm.eps, fm.act)
            device = self.device
            return self.metric(lambda t: patched(t.to(device)))
        for k, v in state.items():
            if self._loaded.get(k) is not v:
                self._live[k].copy_(v)
                self._loaded[k] = v
        return self.metric(self._work)


def norm_matched_random(delta: Mapping[str, Tensor], keys: set[str], gen: torch.Generator) -> dict[str, Tensor]:
    """A Gaussian direction with the same norm as `delta` on every key in `keys` (zero elsewhere)."""
    out = {}
    for k in keys:
        r = torch.randn(delta[k].shape, generator=gen, dtype=torch.float64)
        out[k] = (r * (delta[k].double().norm() / r.norm().clamp(min=1e-30))).to(delta[k])
    return out


def layer_sets(groups: list[ParamGroup]) -> dict[str, list[str]]:
    """Groups per layer; the embeddings and the final norm + unembedding are layers of their own."""
    sets: dict[str, list[str]] = {}
    for g in groups:
        if g.layer is not None:
            label = f"layer {g.layer}"
        else:
            label = "embed" if g.component in ("embed", "pos_embed") else "final"
        sets.setdefault(label, []).append(g.name)
    return sets


# --------------------------------------------------------------------------- delta patching


@dataclass
class PatchConfig:
    """Delta and activation patching settings (the trait scored is an argument: a `Trait`).

    student: the model whose effect is localised; base: its reference (default: its parent).
    control: the baseline student (same base, distilled toward no target); None for none.
    min_effect: nats; the "clear effect" margin (see the module docstring).
    recover: fraction of the student's effect the greedy set must recover.
    greedy: search the greedy set (about n_groups^2 / 2 evaluations; off for a quick table).
    random_control: also patch a norm-matched random delta per group and layer.
    seed: seed of the random deltas.
    engine: delta patching's working model: "auto" (functional when possible), "functional", "bridge".
    hooks: activation patching's hook names (classic TransformerLens names); None = residual
        stream: hook_embed, hook_pos_embed, per layer attn_out, resid_mid, mlp_out, resid_post
        (ln_final.hook_normalized is left out: it is the pre-affine normalised final residual,
        so patching it equals patching the last resid_post).
    positions: activation patching per position for offsets 0..positions-1 before the answer
        position (0 = the answer position itself); None = every position of the longest prompt.
    progress: show a tqdm bar.
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


def _resolve(lin: Lineage, trait: Trait, cfg: PatchConfig) -> tuple[str, str | None]:
    if not isinstance(trait, Trait):
        raise ConfigError(f"Patching scores a Trait; got {type(trait).__name__}. Pass the source's Trait "
                          "(e.g. workbench.organism.trait.organism_trait(tokenizer, 'owl')).")
    if trait.vocab_size is not None and trait.vocab_size != lin.d_vocab:
        raise ConfigError(f"Trait {trait.target!r} was built for a vocabulary of {trait.vocab_size} tokens; the "
                          f"models have {lin.d_vocab}. Build the Trait with the models' tokenizer.")
    _ = trait.target_id  # multi-token answers: a clear error before any work
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


@dataclass
class DeltaPatchingResult(ResultBase):
    """Delta patching tables.

    log_odds: LO of base, student and control. defined: whether recovered fractions are defined.
    rows: one dict per patched set: kind ("group", "layer", "leave_one_out", "all", "none"),
        name, groups, log_odds, gain (LO - LO(base)), recovered (None if undefined),
        control_gain (the control's delta on the same set; for leave-one-out: the control
        without it), random_gain (norm-matched random delta; groups and layers only).
    greedy: the greedy steps (group added, log_odds, recovered); greedy_set: the groups when
        the target fraction was reached (None when undefined).
    """

    kind: ClassVar[str] = "delta_patching"
    title: ClassVar[str] = "Delta patching: which parameter groups carry the trait"
    command: str
    config: PatchConfig
    target: str
    base: str
    engine: str
    log_odds: dict[str, float]
    defined: bool
    rule: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    greedy: list[dict[str, Any]] = field(default_factory=list)
    greedy_set: list[str] | None = None

    def table(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["kind"] == kind]

    def row(self, kind: str, name: str) -> dict[str, Any]:
        for r in self.rows:
            if r["kind"] == kind and r["name"] == name:
                return r
        raise unknown_name(f"{kind} row", name, [r["name"] for r in self.table(kind)])

    def top_groups(self, n: int = 3) -> list[dict[str, Any]]:
        return sorted(self.table("group"), key=lambda r: -r["gain"])[:n]

    def figures(self) -> dict[str, Any]:
        return {"bars": delta_bars(self), "heatmap": delta_heatmap(self)}

    def summary_rows(self) -> list[SummaryRow]:
        """Per parameter group, then per layer, then the whole model and the greedy set: base + ΔS
        on that set, as the recovered fraction of the student's effect where defined (else the
        log-odds gain in nats), beside the control student's delta on the same set in the same
        unit; the norm-matched random delta and leave-one-out (the share lost without the group)
        ride along."""
        lo = self.log_odds
        unit, label = _units(lo, self.defined)
        student, control = self.config.student, self.config.control
        ctrl_name = f"{control}'s Δ" if control else None
        n_groups = len(self.table("group"))
        out: list[SummaryRow] = []

        def row(where: str, group: str, what: str, r: dict[str, Any]) -> SummaryRow:
            value, ctrl, rand = unit(r["gain"]), unit(r.get("control_gain")), unit(r.get("random_gain"))
            d = SummaryRow(where, group, f"{label}, base + Δ{student} {what}", value)
            if control:
                d.control, d.control_value = ctrl_name, ctrl
            d.clears = _clears(value, [ctrl, rand], self.defined)
            if rand is not None:
                d.details["random Δ"] = rand
            d.details["gain_nats"] = r["gain"]
            return d

        loo = {r["name"]: r for r in self.table("leave_one_out")}
        for r in self.table("group"):
            d = row(r["name"], "single group", "here", r)
            d.details["lost_without_it"] = unit(lo["student"] - loo[r["name"]]["log_odds"]) if r["name"] in loo else None
            d.details["n_groups_compared"] = n_groups
            out.append(d)
        for r in self.table("layer"):
            where = r["name"] if r["name"].startswith("layer ") else " + ".join(r["groups"])
            out.append(row(where, "whole layer", "here", r))
        whole = {"gain": lo["student"] - lo["base"], "control_gain": lo["control"] - lo["base"] if "control" in lo else None}
        d = row("whole model", "all groups", "everywhere", whole)
        d.measure = f"{label}, all of Δ{student}"
        d.details.update(defined=self.defined, rule=self.rule)
        out.append(d)
        if self.greedy_set is not None:
            last = self.greedy[len(self.greedy_set) - 1]
            out.append(SummaryRow("whole model", "greedy set", f"{label}, {len(self.greedy_set)}-group greedy set",
                                  last["recovered"], details={"groups": " + ".join(self.greedy_set),
                                                              "target_share": self.config.recover}))
        return out


def delta_patching(lin: Lineage, trait: Trait, config: PatchConfig | None = None, *,
                   device: str | torch.device | None = None) -> DeltaPatchingResult:
    """Patch the student's weight delta into the base group by group (see the module docstring),
    scoring the log-odds of `trait`."""
    cfg = config or PatchConfig()
    base, control = _resolve(lin, trait, cfg)
    student = cfg.student
    pm = PatchedModels(lin, base, trait.log_odds, engine=cfg.engine, device=device)
    groups = lin.groups()
    keys_of = {g.name: set(g.keys) for g in groups}
    layers = layer_sets(groups)
    n = len(groups)
    total = 3 + 2 * (n + len(layers)) * (2 if control else 1) + (n + len(layers)) * cfg.random_control + n * n // 2 * cfg.greedy
    bar = tqdm(total=total, desc="delta patching", disable=not cfg.progress, leave=False)

    def score(state: Mapping[str, Tensor]) -> float:
        bar.update()
        return pm.log_odds(state)

    lo = {"base": score(pm.state(base)), "student": score(pm.state(student))}
    if control:
        lo["control"] = score(pm.state(control))
    s_gain = lo["student"] - lo["base"]
    c_gain = lo["control"] - lo["base"] if control else None
    defined = effect_is_clear(s_gain, c_gain, cfg.min_effect)

    def rec(x: float) -> float | None:
        return recovered_fraction(x, lo["base"], lo["student"], defined)

    gen = torch.Generator().manual_seed(cfg.seed)
    delta_s = {k: (pm.state(student)[k] - pm.state(base)[k]) for k in lin.keys} if cfg.random_control else {}
    rows: list[dict[str, Any]] = []
    for kind, name, members in (
        [("none", "none", []), ("all", "all", [g.name for g in groups])]
        + [("group", g.name, [g.name]) for g in groups]
        + [("layer", label, names) for label, names in layers.items()]
    ):
        keys = set().union(*(keys_of[m] for m in members)) if members else set()
        x = score(pm.mix(student, base, keys)) if members else lo["base"]
        row = {"kind": kind, "name": name, "groups": members, "log_odds": x, "gain": x - lo["base"],
               "recovered": rec(x), "control_gain": None, "random_gain": None}
        if kind == "group":
            g = lin.group(name)
            row.update(layer=g.layer, component=g.component)
        if control and kind in ("group", "layer"):
            row["control_gain"] = score(pm.mix(control, base, keys)) - lo["base"]
        if cfg.random_control and kind in ("group", "layer"):
            noise = norm_matched_random(delta_s, keys, gen)
            b = pm.state(base)
            row["random_gain"] = score({k: (b[k] + noise[k] if k in noise else b[k]) for k in b}) - lo["base"]
        rows.append(row)
    for g in groups:  # leave one out: the student with the base's weights in g
        x = score(pm.mix(base, student, keys_of[g.name]))
        row = {"kind": "leave_one_out", "name": g.name, "groups": [g.name], "log_odds": x, "gain": x - lo["base"],
               "recovered": rec(x), "control_gain": None, "random_gain": None}
        if control:
            row["control_gain"] = score(pm.mix(base, control, keys_of[g.name])) - lo["base"]
        rows.append(row)

    greedy: list[dict[str, Any]] = []
    greedy_set = None
    if defined and cfg.greedy:
        chosen: list[str] = []
        remaining = [g.name for g in groups]
        while remaining:
            trials = []
            for name in remaining:
                keys = set().union(*(keys_of[m] for m in [*chosen, name]))
                trials.append((score(pm.mix(student, base, keys)), name))
            best, name = max(trials)
            chosen.append(name)
            remaining.remove(name)
            greedy.append({"step": len(chosen), "group": name, "log_odds": best, "recovered": rec(best)})
            if rec(best) >= cfg.recover:
                greedy_set = list(chosen)
                break
    bar.close()
    command = (f"delta_patching(lin, trait({trait.target!r}), PatchConfig(student={student!r}, control={control!r}, "
               f"min_effect={cfg.min_effect}, engine={cfg.engine!r}))")
    return DeltaPatchingResult(command=command, config=cfg, target=trait.target, base=base, engine=pm.engine, log_odds=lo,
                               defined=defined, rule=clear_rule(cfg.min_effect), rows=rows, greedy=greedy,
                               greedy_set=greedy_set)


# --------------------------------------------------------------------------- activation patching


@torch.inference_mode()
def cache_activations(model: TransformerBridge, tokens: Int[Tensor, "batch seq"],
                      hooks: list[str]) -> dict[str, Tensor]:
    """Activations of `model` at `hooks` (unknown hook names are an error naming the valid ones)."""
    wanted = set(hooks)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
    missing = [h for h in hooks if h not in cache]
    if missing:
        valid = patching_hooks(int(model.cfg.n_layers)) + list(model.hook_dict)
        raise unknown_name("hook", missing[0], valid, fix="Use classic TransformerLens hook names.")
    return {h: cache[h].clone() for h in hooks}


@torch.inference_mode()
def patched_logits(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch seq"],
    hook: str,
    source: Float[Tensor, "batch seq ..."],
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "batch seq vocab"]:
    """Logits of `model` with the activation at `hook` replaced by `source`: everywhere when
    `positions` is None, else at position positions[b] of row b (rows with a negative position
    are left alone)."""
    if positions is None:
        def replace(act: Tensor, hook: Any) -> Tensor:
            return source.to(act.dtype)
    else:
        rows = torch.nonzero(positions >= 0).squeeze(-1).to(source.device)
        pos = positions.to(source.device)[rows]

        def replace(act: Tensor, hook: Any) -> Tensor:
            act = act.clone()
            act[rows, pos] = source[rows, pos].to(act.dtype)
            return act

    return model.run_with_hooks(tokens, fwd_hooks=[(hook, replace)])


DIRECTIONS = ("student->base", "base->student", "control->base")
"""donor->recipient: the recipient runs with the donor's activation at one hook."""


@dataclass
class ActivationPatchingResult(ResultBase):
    """Activation patching table.

    rows: direction ("student->base", "base->student", "control->base"), hook, position ("all"
        or the offset before the answer position, 0 = the answer position), log_odds, gain
        (LO - LO(base)), recovered (None if undefined or for the control direction).
    """

    kind: ClassVar[str] = "activation_patching"
    title: ClassVar[str] = "Activation patching: which activations carry the trait"
    command: str
    config: PatchConfig
    target: str
    base: str
    hooks: list[str]
    log_odds: dict[str, float]
    defined: bool
    rule: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def value(self, direction: str, hook: str, position: str | int = "all", metric: str = "recovered") -> Any:
        for r in self.rows:
            if r["direction"] == direction and r["hook"] == hook and r["position"] == position:
                return r[metric]
        raise unknown_name("patch", f"{direction} {hook} {position}", sorted({r["hook"] for r in self.rows}))

    def figures(self) -> dict[str, Any]:
        figs = {"hooks": activation_bars(self)}
        for direction in DIRECTIONS[:2]:
            figs[direction.replace("->", "_to_")] = activation_heatmap(self, direction)
        return figs

    def summary_rows(self) -> list[SummaryRow]:
        """Per hook, all positions: the base run with the student's activation (student->base), as
        the recovered fraction of the student's effect where defined (else the log-odds gain in
        nats), beside the control's activation patched the same way; the reverse patch (what
        remains of the effect with the base's activation: low = necessary) and the best single
        position ride along."""
        unit, label = _units(self.log_odds, self.defined)
        out = []
        for h in self.hooks:
            value = unit(self.value("student->base", h, metric="gain"))
            ctrl = unit(self.value("control->base", h, metric="gain")) if self.config.control else None
            d = SummaryRow(h, "student->base", f"{label}, {self.config.student}->base patch", value)
            if self.config.control:
                d.control, d.control_value = "control->base", ctrl
            d.clears = _clears(value, [ctrl], self.defined)
            d.details["remaining base->student"] = unit(self.value("base->student", h, metric="gain"))
            per_pos = [r for r in self.rows if r["direction"] == "student->base" and r["hook"] == h and r["position"] != "all"]
            if per_pos:
                best = max(per_pos, key=lambda r: r["gain"])
                d.details["best position (offset)"] = best["position"]
                d.details["best position value"] = unit(best["gain"])
            d.details["gain_nats"] = self.value("student->base", h, metric="gain")
            out.append(d)
        return out


def activation_patching(lin: Lineage, trait: Trait, config: PatchConfig | None = None, *,
                        device: str | torch.device | None = None) -> ActivationPatchingResult:
    """Patch one hook's activations between base and student (both ways) on the trait's prompts."""
    cfg = config or PatchConfig()
    base, control = _resolve(lin, trait, cfg)
    dev = resolve_device(device) if device is not None else lin.device
    names = [n for n in (base, cfg.student, control) if n is not None]
    models = {n: (lin[n] if _on(lin[n], dev) else copy_model(lin[n], device=dev)) for n in names}
    tokens, last = trait.tokens.to(dev), trait.answer_positions
    hooks = list(cfg.hooks) if cfg.hooks is not None else patching_hooks(int(lin.cfg.n_layers))
    acts = {n: cache_activations(models[n], tokens, hooks) for n in names}
    n_pos = cfg.positions if cfg.positions is not None else int(last.max()) + 1

    def lo_of(fn: Callable[[Tensor], Tensor]) -> float:
        return trait.log_odds(lambda t: fn(t.to(dev)))

    lo = {"base": lo_of(models[base]), "student": lo_of(models[cfg.student])}
    if control:
        lo["control"] = lo_of(models[control])
    s_gain = lo["student"] - lo["base"]
    defined = effect_is_clear(s_gain, lo["control"] - lo["base"] if control else None, cfg.min_effect)
    pairs = [("student->base", cfg.student, base), ("base->student", base, cfg.student)]
    if control:
        pairs.append(("control->base", control, base))
    positions: list[str | int] = ["all", *range(n_pos)]
    rows = []
    bar = tqdm(total=len(pairs) * len(hooks) * len(positions), desc="activation patching",
               disable=not cfg.progress, leave=False)
    for direction, donor, recipient in pairs:
        for h in hooks:
            for p in positions:
                pos = None if p == "all" else last - int(p)
                x = lo_of(lambda t, h=h, pos=pos: patched_logits(models[recipient], t, h, acts[donor][h], pos))
                rec = None if direction == "control->base" else recovered_fraction(x, lo["base"], lo["student"], defined)
                rows.append({"direction": direction, "hook": h, "position": p, "log_odds": x,
                             "gain": x - lo["base"], "recovered": rec})
                bar.update()
    bar.close()
    command = (f"activation_patching(lin, trait({trait.target!r}), PatchConfig(student={cfg.student!r}, "
               f"control={control!r}, min_effect={cfg.min_effect}))")
    return ActivationPatchingResult(command=command, config=cfg, target=trait.target, base=base, hooks=hooks, log_odds=lo,
                                    defined=defined, rule=clear_rule(cfg.min_effect), rows=rows)


# --------------------------------------------------------------------------- figures


def _metric_label(defined: bool) -> tuple[str, str]:
    return ("recovered", "recovered fraction") if defined else ("gain", "log-odds gain over base (recovered undefined)")


def delta_bars(result: DeltaPatchingResult) -> Any:
    """Per group: the gain from the student's delta alone, the loss from removing it, and the controls."""
    import plotly.graph_objects as go

    groups = result.table("group")
    x = [r["name"] for r in groups]
    lo = result.log_odds
    s_gain = lo["student"] - lo["base"]
    fig = go.Figure()
    fig.add_bar(name=f"base + Δ{result.config.student} on group", x=x, y=[r["gain"] for r in groups])
    fig.add_bar(name=f"{result.config.student} − its Δ on group (loss)", x=x,
                y=[lo["student"] - r["log_odds"] for r in result.table("leave_one_out")])
    if result.config.control:
        fig.add_bar(name=f"base + Δ{result.config.control} on group", x=x, y=[r["control_gain"] for r in groups])
    if result.config.random_control:
        fig.add_bar(name="base + norm-matched random Δ", x=x, y=[r["random_gain"] for r in groups])
    fig.add_hline(y=s_gain, line_dash="dash", annotation_text=f"{result.config.student}: {s_gain:+.2f}")
    note = "" if result.defined else " (student effect not clear: recovered fractions undefined)"
    fig.update_layout(title=f"Delta patching, log-odds of P({result.target}) vs base{note}", barmode="group",
                      yaxis_title="Δ log-odds (nats)", xaxis_tickangle=-45)
    return fig


def delta_heatmap(result: DeltaPatchingResult) -> Any:
    """Layer x component: recovered fraction of each group alone (gain when undefined)."""
    import plotly.graph_objects as go

    metric, label = _metric_label(result.defined)
    cells = [{**r, "value": r[metric], "hover": f"{r['name']}<br>gain {r['gain']:+.3f}<br>control {r['control_gain']}"}
             for r in result.table("group")]
    y, x, z, text = layer_component_grid(cells)
    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, text=text, hoverinfo="text", colorscale="RdBu", reversescale=True,
                               zmid=0, colorbar={"title": metric}))
    fig.update_layout(title=f"Delta patching per group: {label}", yaxis={"autorange": "reversed"})
    return fig


def activation_heatmap(result: ActivationPatchingResult, direction: str) -> Any:
    """Hook x position (offset before the answer position) for one direction."""
    import plotly.graph_objects as go

    metric, label = _metric_label(result.defined)
    rows = [r for r in result.rows if r["direction"] == direction and r["position"] != "all"]
    pos = sorted({r["position"] for r in rows})
    z = [[next(r[metric] for r in rows if r["hook"] == h and r["position"] == p) for p in pos] for h in result.hooks]
    fig = go.Figure(go.Heatmap(z=z, x=[f"-{p}" if p else "answer" for p in pos], y=result.hooks, colorscale="Viridis",
                               colorbar={"title": metric}))
    fig.update_layout(title=f"Activation patching {direction}: {label}", yaxis={"autorange": "reversed"},
                      xaxis_title="position (offset from the answer position)")
    return fig


def activation_bars(result: ActivationPatchingResult) -> Any:
    """Per hook over all positions: gain in every direction."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for direction in DIRECTIONS:
        rows = [r for r in result.rows if r["direction"] == direction and r["position"] == "all"]
        if rows:
            fig.add_bar(name=direction, x=[r["hook"] for r in rows], y=[r["gain"] for r in rows])
    s_gain = result.log_odds["student"] - result.log_odds["base"]
    fig.add_hline(y=s_gain, line_dash="dash", annotation_text=f"student: {s_gain:+.2f}")
    fig.update_layout(title=f"Activation patching, all positions: log-odds of P({result.target}) vs base",
                      barmode="group", yaxis_title="Δ log-odds (nats)", xaxis_tickangle=-45)
    return fig
