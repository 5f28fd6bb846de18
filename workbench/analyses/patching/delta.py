"""Delta patching: which parameter groups carry the trait.

The base with the student's weights in a set G of parameter groups (= base + ΔS restricted to
G), for every single group, every layer (the embeddings and the final norm + unembedding count
as layers of their own), and leave-one-out (the student with the base's weights in one group,
i.e. ΔS_g removed); then a greedy set of groups, grown one best group at a time, until it
recovers >= `recover` (80%) of the effect. Controls beside every number: the control student's
delta in the same groups, and a random delta norm-matched to ΔS key by key. Scores are the
trait's log-odds (see `workbench.analyses.patching`); the weights are swapped in one working
model (`PatchedModels`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from workbench.analyses.patching.figures import delta_bars, delta_heatmap
from workbench.analyses.patching.patched_models import PatchedModels, layer_sets, norm_matched_patch
from workbench.analyses.patching.rules import (
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
from workbench.core.progress import progress_bar
from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow
from workbench.trait import Trait


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
        unit, label = summary_units(lo, self.defined)
        student, control = self.config.student, self.config.control
        ctrl_name = f"{control}'s Δ" if control else None
        n_groups = len(self.table("group"))
        out: list[SummaryRow] = []

        def row(where: str, group: str, what: str, r: dict[str, Any]) -> SummaryRow:
            value, ctrl, rand = unit(r["gain"]), unit(r.get("control_gain")), unit(r.get("random_gain"))
            d = SummaryRow(where, group, f"{label}, base + Δ{student} {what}", value)
            if control:
                d.control, d.control_value = ctrl_name, ctrl
            d.clears = clears_controls(value, [ctrl, rand], self.defined)
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
    base, control = resolve_models(lin, trait, cfg)
    student = cfg.student
    pm = PatchedModels(lin, base, trait.log_odds, engine=cfg.engine, device=device)
    groups = lin.groups()
    keys_of = {g.name: set(g.keys) for g in groups}
    layers = layer_sets(groups)
    n = len(groups)
    total = 3 + 2 * (n + len(layers)) * (2 if control else 1) + (n + len(layers)) * cfg.random_control + n * n // 2 * cfg.greedy
    bar = progress_bar(total=total, desc="delta patching", enabled=cfg.progress)

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
            b = pm.state(base)
            noisy = norm_matched_patch(pm.state(student), b, keys, gen)  # base + random on `keys`, nothing else copied
            row["random_gain"] = score({k: noisy.get(k, b[k]) for k in b}) - lo["base"]
            del noisy
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
    command = (f"delta_patching(lin, <Trait {trait.target!r}>, PatchConfig(student={student!r}, control={control!r}, "
               f"min_effect={cfg.min_effect}, engine={cfg.engine!r}))")
    return DeltaPatchingResult(command=command, config=cfg, target=trait.target, base=base, engine=pm.engine, log_odds=lo,
                               defined=defined, rule=clear_rule(cfg.min_effect), rows=rows, greedy=greedy,
                               greedy_set=greedy_set)

