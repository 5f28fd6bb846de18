"""The results of the activation-shift comparison: `ActivationComparison` (one seed: shifts,
alignments with bootstrap intervals, logit lens) and `SeedAggregate` (alignments and shift norms
over seeds, the seed as the unit), built by `aggregate_seeds`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from workbench.analyses.shift_figures import comparison_figures, seed_aggregate_figures
from workbench.core.errors import ConfigError
from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow
from workbench.results.seeds import SeedStats, over_seeds


def pair_label(model: str, ref: str) -> str:
    """The key of an alignment pair: "student~teacher"."""
    return f"{model}~{ref}"


def short_hook(hook: str) -> str:
    """'blocks.1.hook_resid_post' -> 'L1 resid_post'."""
    parts = hook.split(".")
    if parts[0] == "blocks" and len(parts) >= 3:
        return f"L{parts[1]} {'.'.join(parts[2:]).replace('hook_', '')}"
    return hook.replace("hook_", "")


@dataclass
class ActivationComparison(ResultBase):
    """Shifts of every model against its parent, per hook, with their alignments and logit lens.

    hooks: hook names in depth order. parents: model -> the parent it is compared with.
    rel_norm[model]: |v_model| / mean |a_parent| per hook, with bootstrap intervals (_lo/_hi).
    cos[pair]: cos(v_model, v_reference) per hook (pair "student~teacher"), with intervals.
    lens[model][i]: the logit-lens view of the shift at hook i (top tokens, target change), or {}.
    shifts: "model|hook" -> the shift vector v (saved as tensors).
    meta: rows, positions, bootstrap settings, target, the store's plan hash, seed of the organism.
    """

    hooks: list[str]
    parents: dict[str, str]
    rel_norm: dict[str, list[float]]
    rel_norm_lo: dict[str, list[float]]
    rel_norm_hi: dict[str, list[float]]
    cos: dict[str, list[float]]
    cos_lo: dict[str, list[float]]
    cos_hi: dict[str, list[float]]
    lens: dict[str, list[dict[str, Any]]]
    meta: dict[str, Any]
    shifts: dict[str, Tensor] = field(default_factory=dict, repr=False)
    command: str = "workbench.compare_activations(lineage, store, CompareConfig())"

    kind: ClassVar[str] = "compare"
    title: ClassVar[str] = "Activation shifts: does the student move the way its teacher does?"

    @property
    def pairs(self) -> list[str]:
        return list(self.cos)

    def layer_labels(self) -> list[str]:
        return [short_hook(h) for h in self.hooks]

    def figures(self) -> dict[str, Any]:
        return comparison_figures(self)

    def summary_rows(self) -> list[SummaryRow]:
        """Per hook: cos(v_student, v_teacher) with its bootstrap interval beside the control
        student's, then the other-target and cross-init students' cosines (cross: a floor, other
        coordinates), the remaining pairs, relative shift norms and the logit-lens view."""
        main, ctrl = pair_label("student", "teacher"), pair_label("control", "teacher")
        if main not in self.cos:
            return []
        rows = []
        for i, hook in enumerate(self.hooks):
            row = SummaryRow(hook, "shift alignment", "cos(v_student, v_teacher), activations", self.cos[main][i],
                             ci=[self.cos_lo[main][i], self.cos_hi[main][i]])
            details = row.details
            if ctrl in self.cos:
                row.control, row.control_value = "control student", self.cos[ctrl][i]
                details["control_ci"] = [self.cos_lo[ctrl][i], self.cos_hi[ctrl][i]]
            for p in self.pairs:
                if p not in (main, ctrl):
                    details[f"cos {p}"] = self.cos[p][i]
            for m in ("student", "teacher"):
                if m in self.rel_norm:
                    details[f"rel_norm {m}"] = self.rel_norm[m][i]
            for m in ("student", "teacher"):
                entry = self.lens.get(m, [{}] * len(self.hooks))[i]
                if entry:
                    if "target_rank" in entry:
                        details[f"lens rank of target {m}"] = entry["target_rank"]
                    details[f"lens top {m}"] = entry["top_tokens"][:5]
            rows.append(row)
        return rows


@dataclass
class SeedAggregate(ResultBase):
    """Alignments and shift norms over seeds (the seed is the unit): mean, sample std, each seed.

    values[pair][i]: per-seed cosines at hook i; norms[model][i]: per-seed relative norms.
    """

    hooks: list[str]
    seeds: list[Any]
    values: dict[str, list[list[float]]]
    norms: dict[str, list[list[float]]]
    meta: dict[str, Any]
    command: str = "workbench.aggregate_seeds(results)"

    kind: ClassVar[str] = "compare_seeds"
    title: ClassVar[str] = "Activation-shift alignment across seeds"

    def stats(self, pair: str) -> list[SeedStats]:
        """Per hook: the cosine over seeds (seeds where it is undefined, i.e. no shift, left out)."""
        return [over_seeds(v) for v in self.values[pair]]

    def mean(self, pair: str) -> list[float]:
        """Mean over seeds per hook (NaN where no seed defines it)."""
        return [s.mean_or(float("nan")) for s in self.stats(pair)]

    def std(self, pair: str) -> list[float]:
        """Sample standard deviation over seeds per hook (NaN with fewer than two seeds)."""
        return [s.sd_or(float("nan")) for s in self.stats(pair)]

    def layer_labels(self) -> list[str]:
        """Short hook names for axes and tables ('L1 resid_post')."""
        return [short_hook(h) for h in self.hooks]

    def figures(self) -> dict[str, Any]:
        return seed_aggregate_figures(self)

    def summary_rows(self) -> list[SummaryRow]:
        """Per hook: cos(v_student, v_teacher) as mean ± sd over seeds beside the control student's
        mean; every pair's mean, sd and per-seed values ride along."""
        main, ctrl = pair_label("student", "teacher"), pair_label("control", "teacher")
        first = main if main in self.values else next(iter(self.values), None)
        if first is None:
            return []
        stats = {p: self.stats(p) for p in self.values}
        rows = []
        for i, hook in enumerate(self.hooks):
            lead = stats[first][i]
            row = SummaryRow(hook, "shift alignment over seeds",
                             f"cos(v_{first.replace('~', ', v_')}), activations, mean over {len(self.seeds)} seeds",
                             lead.mean, sd=lead.sd)
            if first == main and ctrl in stats:
                row.control, row.control_value = "control student", stats[ctrl][i].mean
            row.details.update(layer=short_hook(hook), n_seeds=len(self.seeds))
            for p, per_hook in stats.items():
                row.details[f"cos {p} mean"] = per_hook[i].mean
                row.details[f"cos {p} std"] = per_hook[i].sd
                row.details[f"cos {p} per seed"] = per_hook[i].per_seed
            rows.append(row)
        return rows

    def table(self, pairs: Sequence[str] | None = None) -> str:
        """A plain-text table: one row per layer, mean ± std over seeds per pair."""
        pairs = list(pairs or self.values)
        head = f"{'layer':<14}" + "".join(f"{p:>26}" for p in pairs)
        lines = [head]
        for i, hook in enumerate(self.hooks):
            cells = [f"{self.mean(p)[i]:+.3f} ± {self.std(p)[i]:.3f}" for p in pairs]
            lines.append(f"{short_hook(hook):<14}" + "".join(f"{c:>26}" for c in cells))
        return "\n".join(lines)


def aggregate_seeds(results: Sequence[ActivationComparison]) -> SeedAggregate:
    """Mean and spread over seeds of per-seed comparisons (same hooks and pairs in each)."""
    if not results:
        raise ConfigError("aggregate_seeds needs at least one comparison.")
    hooks = results[0].hooks
    for r in results[1:]:
        if r.hooks != hooks or set(r.pairs) != set(results[0].pairs):
            raise ConfigError("The comparisons differ in hooks or pairs; compare every seed with the same config.")
    values = {p: [[r.cos[p][i] for r in results] for i in range(len(hooks))] for p in results[0].pairs}
    norms = {m: [[r.rel_norm[m][i] for r in results] for i in range(len(hooks))] for m in results[0].rel_norm}
    seeds = [r.meta.get("seed", k) for k, r in enumerate(results)]
    meta = {k: results[0].meta.get(k) for k in ("positions", "data", "target", "d_model")}
    meta.update(pair_order=list(values), model_order=list(norms))
    return SeedAggregate(hooks=hooks, seeds=seeds, values=values, norms=norms, meta=meta)
