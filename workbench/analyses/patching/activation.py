"""Activation patching: which activations carry the trait.

The base run on the trait prompts with one hook's activation replaced by the student's
(student -> base, "denoising"), and the reverse (base -> student, "noising"), per hook over all
positions and per position; the control's activations patched into the base give each hook's
control effect. In the noising direction the recovered fraction says how much of the effect
*remains* once the hook's activation is the base's: a low value there means the hook is
necessary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.capture.hooks import patching_hooks
from workbench.analyses.patching.figures import activation_bars, activation_heatmap
from workbench.analyses.patching.patched_models import on_device
from workbench.analyses.patching.stream_patch import check_patch_hooks, default_patch_hooks, patch_hooks
from workbench.analyses.patching.rules import (
    DIRECTIONS,
    PatchConfig,
    clear_rule,
    clears_controls,
    effect_is_clear,
    recovered_fraction,
    resolve_models,
    summary_units,
)
from workbench.core.errors import unknown_name
from workbench.core.lineage import Lineage
from workbench.core.models import copy_model, resolve_device
from workbench.core.progress import progress_bar
from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow
from workbench.trait import Trait, log_odds


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
    are left alone). The replaced value is what flows on (`stream_patch.patch_hooks`)."""
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

    return model.run_with_hooks(tokens, fwd_hooks=patch_hooks(hook, replace))


@torch.inference_mode()
def patched_log_odds_forms(trait: Trait, model: TransformerBridge, hook: str,
                           source: Float[Tensor, "templates seq ..."], offset: int | None,
                           device: torch.device | str) -> float:
    """Log-odds of a multi-token trait with `model`'s activation at `hook` replaced by `source`
    (the donor's activations on `trait.tokens`) at each prompt's positions: all of them when
    `offset` is None, else the one `offset` before the answer position. The answer tokens are
    never patched (as on the single-token path, where only the prompts run). One forward over
    the rows that score the target's forms (`workbench.trait_forms.form_rows`); the log-odds is
    that of P(target) averaged over prompts, as `Trait.log_odds` (P(target | prompt): the sum
    over the target's forms)."""
    from workbench.trait_forms import form_rows, score_rows

    plan = form_rows(trait.prompts, [trait.forms[trait.target]])
    r_idx, pos, src_i = [], [], []
    for r, (i, _) in enumerate(plan.rows):
        p = plan.prompts[i]
        at = range(len(p)) if offset is None else [len(p) - 1 - offset] if len(p) - 1 - offset >= 0 else []
        for j in at:
            r_idx.append(r)
            pos.append(j)
            src_i.append(i)
    r_t, pos_t, i_t = (torch.tensor(x, dtype=torch.long, device=source.device) for x in (r_idx, pos, src_i))
    values = source[i_t, pos_t]

    def replace(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        act[r_t.to(act.device), pos_t.to(act.device)] = values.to(device=act.device, dtype=act.dtype)
        return act

    def logits(tokens: Tensor) -> Tensor:
        return model.run_with_hooks(tokens.to(device), fwd_hooks=patch_hooks(hook, replace))

    # one batch of all of `plan`'s rows: the single forward the hook's row indices refer to
    lp = score_rows(logits, plan, trait.pad_id, device, batch_size=len(plan.rows))
    return float(log_odds(float(lp[:, 0].double().exp().mean())))


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
        unit, label = summary_units(self.log_odds, self.defined)
        out = []
        for h in self.hooks:
            value = unit(self.value("student->base", h, metric="gain"))
            ctrl = unit(self.value("control->base", h, metric="gain")) if self.config.control else None
            d = SummaryRow(h, "student->base", f"{label}, {self.config.student}->base patch", value)
            if self.config.control:
                d.control, d.control_value = "control->base", ctrl
            d.clears = clears_controls(value, [ctrl], self.defined)
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
    base, control = resolve_models(lin, trait, cfg)
    dev = resolve_device(device) if device is not None else lin.device
    names = [n for n in (base, cfg.student, control) if n is not None]
    models = {n: (lin[n] if on_device(lin[n], dev) else copy_model(lin[n], device=dev)) for n in names}
    tokens, last = trait.tokens.to(dev), trait.answer_positions
    hooks = list(cfg.hooks) if cfg.hooks is not None else default_patch_hooks(models[base])
    check_patch_hooks(models[base], hooks)
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
    bar = progress_bar(total=len(pairs) * len(hooks) * len(positions), desc="activation patching",
               enabled=cfg.progress)
    for direction, donor, recipient in pairs:
        for h in hooks:
            for p in positions:
                pos = None if p == "all" else last - int(p)
                if trait.single_token:
                    x = lo_of(lambda t, h=h, pos=pos: patched_logits(models[recipient], t, h, acts[donor][h], pos))
                else:
                    x = patched_log_odds_forms(trait, models[recipient], h, acts[donor][h],
                                               None if p == "all" else int(p), dev)
                rec = None if direction == "control->base" else recovered_fraction(x, lo["base"], lo["student"], defined)
                rows.append({"direction": direction, "hook": h, "position": p, "log_odds": x,
                             "gain": x - lo["base"], "recovered": rec})
                bar.update()
    bar.close()
    command = (f"activation_patching(lin, <Trait {trait.target!r}>, PatchConfig(student={cfg.student!r}, "
               f"control={control!r}, min_effect={cfg.min_effect}))")
    return ActivationPatchingResult(command=command, config=cfg, target=trait.target, base=base, hooks=hooks, log_odds=lo,
                                    defined=defined, rule=clear_rule(cfg.min_effect), rows=rows)

