"""Activation shifts: where the student's activations move the way the teacher's do.

For each hook, on the same Inputs, every model is compared with its own parent base (the
`parent` recorded in the artifact: base for teacher and students, base_x for the cross-init
student): the mean shift v_m = mean_x[a_m(x) - a_parent(x)], its norm relative to the parent's
mean activation norm, and alignments cos(v_student, v_teacher) beside the same for the control,
other-target and cross-init students (and each control beside its own teacher). Intervals are
a Poisson bootstrap over inputs (rows resampled jointly for every model, so cosines are paired);
across seeds, `aggregate_seeds` gives mean and spread with the seed as the unit.

A logit-lens view reads each shift through the parent's final norm and unembedding: which tokens
the shift promotes. LayerNorm is not linear; the view linearises it at the parent's scale,
LN(a + v) - LN(a) ~= gamma * (v - mean(v)) / sigma, with sigma the parent's mean scale at that
hook and the (small) change of sigma itself ignored. It reads a direction, not the exact logits.

cross lives in another initialisation's coordinates, so cos(v_cross, v_teacher) is a floor
(~ +-2/sqrt(d_model) for unrelated directions), not a like-for-like comparison.

>>> import tempfile
>>> from workbench.core.inputs import Inputs
>>> from workbench.core.lineage import Lineage
>>> from workbench.core.models import boot_native
>>> cfg = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=10, n_ctx=4,
...            act_fn="gelu", normalization_type="LN", seed=0)
>>> from workbench.capture.capture import capture
>>> lin = Lineage.from_models({"base": boot_native(cfg), "teacher": boot_native(dict(cfg, seed=1)),
...                            "student": boot_native(dict(cfg, seed=2))})
>>> inputs = Inputs.from_sequences([[1, 2], [3]], [[4], [5, 6]], sources="teacher", pad_id=0)
>>> out = tempfile.TemporaryDirectory()
>>> store = capture(lin, inputs, residual_hooks(1), positions="mean", out_dir=out.name, progress=False)
>>> result = compare(store, lin, CompareConfig(n_bootstrap=20))   # trait=... adds the logit lens
>>> result.pairs
['student~teacher']
>>> result.save(f"{out.name}/compare").name
'compare.json'
>>> out.cleanup()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from workbench.capture.hooks import hook_layer, residual_hooks  # noqa: F401 (re-exported: the docstring example and notebooks)
from workbench.core.errors import ConfigError, IncompatibleModelsError
from workbench.core.lineage import Lineage
from workbench.results.base import ResultBase
from workbench.results.figures import line_figure
from workbench.results.rows import SummaryRow
from workbench.results.seeds import SeedStats, over_seeds
from workbench.capture.store import ActivationStore, weights_sha256
from workbench.trait import Trait

DEFAULT_ALIGNMENTS: tuple[tuple[str, str], ...] = (
    ("student", "teacher"),
    ("control", "teacher"),
    ("other", "teacher"),
    ("cross", "teacher"),
    ("control", "teacher_neutral"),
    ("other", "teacher_other"),
    ("teacher_other", "teacher"),
)
"""(model, reference) pairs whose shift cosines are reported: the student beside its controls,
then each control beside its own teacher (does a student follow *its* teacher at all?), then the
two trait teachers against each other (how much of v_teacher is shared by any trait teacher, which
bounds what the other-target student can show)."""

SHIFT_ORDER = ("teacher", "teacher_neutral", "teacher_other", "student", "control", "other", "cross")


def pair_label(model: str, ref: str) -> str:
    return f"{model}~{ref}"


@dataclass
class CompareConfig:
    """How shifts are compared (defaults: seconds on a CPU for ~10k rows)."""

    alignments: list[tuple[str, str]] = field(default_factory=lambda: list(DEFAULT_ALIGNMENTS))
    """(model, reference) pairs for cos(v_model, v_reference); pairs with a missing model are skipped."""
    n_bootstrap: int = 500  # bootstrap replicates over inputs (Poisson weights)
    ci: float = 0.95  # width of the percentile intervals
    seed: int = 0  # bootstrap seed
    top_k: int = 8  # tokens listed per shift in the logit-lens view
    batch_rows: int = 4096  # rows read from the store at a time (memory bound)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompareConfig:
        d = dict(d)
        if "alignments" in d:
            d["alignments"] = [tuple(p) for p in d["alignments"]]
        return cls(**d)


# --------------------------------------------------------------------------- per-row vectors


def row_vectors(store: ActivationStore, model: str, hook: str, rows: slice) -> Float[Tensor, "rows d"]:
    """One vector per input row: "last"/"mean" as stored, "all" averaged over the Inputs mask,
    explicit position lists averaged over the listed positions; trailing dims flattened."""
    acts = store.read(model, hook, rows, dtype=torch.float32)
    if store.positions == "all":
        m = store.inputs.mask[rows, : acts.shape[1]].to(torch.float32)
        acts = torch.einsum("rp...,rp->r...", acts, m) / m.sum(1).clamp(min=1).reshape(-1, *([1] * (acts.ndim - 2)))
    elif isinstance(store.positions, list):
        acts = acts.mean(dim=1)
    return rearrange(acts, "r ... -> r (...)")


def _percentile(x: Tensor, ci: float) -> tuple[list[float], list[float]]:
    lo = torch.nanquantile(x, (1 - ci) / 2, dim=0)
    hi = torch.nanquantile(x, 1 - (1 - ci) / 2, dim=0)
    return lo.tolist(), hi.tolist()


def _cos(a: Tensor, b: Tensor) -> Tensor:
    """Cosine along the last dim; NaN where either vector is zero (no shift, no direction)."""
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    c = (a * b).sum(-1) / (na * nb)
    return torch.where((na > 0) & (nb > 0), c, torch.full_like(c, float("nan")))


@dataclass
class _HookStats:
    shift: dict[str, Tensor]  # model -> v (d,)
    boot: dict[str, Tensor]  # model -> bootstrap v (B, d)
    parent_norm: dict[str, float]  # model -> mean row norm of its parent's activations
    parent_scale: dict[str, float]  # model -> std over d of its parent's row vectors (fallback LN scale)


def _hook_stats(store: ActivationStore, hook: str, pairs: dict[str, str], cfg: CompareConfig) -> _HookStats:
    """Stream the rows once: shift sums, Poisson-bootstrap sums, parent norms and scales."""
    n = store.n_rows
    sums: dict[str, Tensor] = {}
    boot: dict[str, Tensor] = {}
    wsum = torch.zeros(cfg.n_bootstrap, dtype=torch.float64)
    norm_sum = {p: 0.0 for p in set(pairs.values())}
    scale_sum = {p: 0.0 for p in set(pairs.values())}
    for block, start in enumerate(range(0, n, cfg.batch_rows)):
        rows = slice(start, min(start + cfg.batch_rows, n))
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + block)
        w = torch.poisson(torch.ones(cfg.n_bootstrap, rows.stop - rows.start), generator=gen).double()
        wsum += w.sum(1)
        parents = {p: row_vectors(store, p, hook, rows).double() for p in set(pairs.values())}
        for p, a in parents.items():
            norm_sum[p] += float(a.norm(dim=1).sum())
            scale_sum[p] += float(a.var(dim=1, unbiased=False).add(1e-5).sqrt().sum())
        for model, parent in pairs.items():
            diff = row_vectors(store, model, hook, rows).double() - parents[parent]
            sums[model] = sums.get(model, 0) + diff.sum(0)
            boot[model] = boot.get(model, 0) + w @ diff
    return _HookStats(
        shift={m: (s / n).float() for m, s in sums.items()},
        boot={m: (b / wsum[:, None].clamp(min=1)).float() for m, b in boot.items()},
        parent_norm={m: norm_sum[p] / n for m, p in pairs.items()},
        parent_scale={m: scale_sum[p] / n for m, p in pairs.items()},
    )


# --------------------------------------------------------------------------- logit lens


def _readout(lineage: Lineage, model: str) -> tuple[Tensor, Tensor, bool] | None:
    """(gamma [d], W_U [vocab, d], centred) of a model's final norm and unembedding, or None."""
    sd = lineage[model].state_dict()
    if "unembed.weight" not in sd:
        return None
    w_u = sd["unembed.weight"].detach().float().cpu()
    d = w_u.shape[1]
    gamma = sd.get("ln_final.weight")
    gamma = torch.ones(d) if gamma is None else gamma.detach().float().cpu()
    centred = str(getattr(lineage.cfg, "normalization_type", "LN")).upper().startswith("LN")
    return gamma, w_u, centred


def logit_lens(shift: Float[Tensor, " d"], gamma: Float[Tensor, " d"], w_u: Float[Tensor, "vocab d"],
               scale: float, centred: bool = True) -> Float[Tensor, " vocab"]:
    """Change of logits a residual shift causes through the final norm linearised at `scale`
    (LayerNorm is not linear: this ignores the change of the norm's scale itself), centred over
    the vocabulary (a constant logit shift changes nothing)."""
    v = shift - shift.mean() if centred else shift
    delta = w_u @ (gamma * v / scale)
    return delta - delta.mean()


# --------------------------------------------------------------------------- the result


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
    command: str = "workbench.compare.compare(store, lineage, CompareConfig())"

    kind: ClassVar[str] = "compare"
    title: ClassVar[str] = "Activation shifts: does the student move the way its teacher does?"

    @property
    def pairs(self) -> list[str]:
        return list(self.cos)

    def layer_labels(self) -> list[str]:
        return [_short(h) for h in self.hooks]

    def figures(self) -> dict[str, Any]:
        x = self.layer_labels()
        title = f"{self.meta.get('data', 'inputs')}, positions={self.meta['positions']}, seed {self.meta.get('seed')}"
        figs = {
            "alignment": line_figure(x, {p: (self.cos[p], self.cos_lo[p], self.cos_hi[p]) for p in self.pairs},
                                     f"cos(v_model, v_reference) per layer ({title})", "cosine of mean shifts",
                                     null_band=2 / math.sqrt(max(self.meta.get("d_model", 1), 1))),
            "shift_norms": line_figure(x, {m: (self.rel_norm[m], self.rel_norm_lo[m], self.rel_norm_hi[m])
                                           for m in self.rel_norm},
                                       f"|v_model| / |a_parent| per layer ({title})", "relative shift norm"),
        }
        target = self.meta.get("target")
        if target and any(e for entries in self.lens.values() for e in entries):
            lines = {m: ([e.get("target_delta", float("nan")) for e in self.lens[m]], None, None) for m in self.lens}
            figs["logit_lens_target"] = line_figure(
                x, lines, f"logit-lens change of '{target}' caused by each shift ({title})",
                f"centred Δlogit of '{target}' (LN linearised at the parent's scale)")
        return figs

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


def _short(hook: str) -> str:
    """'blocks.1.hook_resid_post' -> 'L1 resid_post'."""
    parts = hook.split(".")
    if parts[0] == "blocks" and len(parts) >= 3:
        return f"L{parts[1]} {'.'.join(parts[2:]).replace('hook_', '')}"
    return hook.replace("hook_", "")


# --------------------------------------------------------------------------- the analysis


def _check_models(store: ActivationStore, lineage: Lineage | None, models: list[str]) -> None:
    if lineage is None:
        return
    for m in models:
        if m not in lineage:
            raise IncompatibleModelsError(f"The artifact holds {m!r} but the lineage has no such model: pass the lineage "
                                          "the activations were captured from.")
        want = store.model_info(m)["weights_sha256"]
        if weights_sha256(lineage[m].state_dict()) != want:
            raise IncompatibleModelsError(
                f"Model {m!r} in the lineage is not the one captured in {store.directory} (weight hashes differ). "
                "Pass the lineage the activations were captured from, or capture again.")


def compare(store: ActivationStore, lineage: Lineage | None = None, config: CompareConfig | None = None,
            *, trait: Trait | None = None, meta: dict[str, Any] | None = None) -> ActivationComparison:
    """Shifts of every captured model against its parent, per hook, with alignments and logit lens.

    store: an artifact holding each model and its parent (base, and base_x for cross).
    lineage: the same models, for the logit lens (final norm + unembedding) and to check the
        weights match the artifact; None skips the logit lens. Its `tokenizer` (anything with
        `decode(ids)`), when set, names the lens's top tokens.
    trait: its target's logit-lens change is reported per shift (None: no target).
    meta: extra labels recorded in the result (e.g. {"seed": 0, "data": "teacher"}).
    """
    cfg = config or CompareConfig()
    if cfg.n_bootstrap < 2:
        raise ConfigError(f"n_bootstrap={cfg.n_bootstrap}; use at least 2 (200+ for intervals worth reading).")
    captured = store.models
    pairs = {m: store.parent_of(m) for m in captured if store.parent_of(m) in captured}
    if not pairs:
        raise ConfigError(
            f"No model in {store.directory} has its parent captured beside it (models: {captured}). Capture the "
            "parents too (base, and base_x for cross).")
    _check_models(store, lineage, list(captured))
    alignments = [(m, r) for m, r in cfg.alignments if m in pairs and r in pairs]
    hooks = sorted(store.hooks, key=lambda h: (hook_layer(h, 10**6), store.hooks.index(h)))
    tok = getattr(lineage, "tokenizer", None) if lineage is not None else None
    target_id = trait.target_id if trait is not None else None
    readouts = {p: _readout(lineage, p) for p in set(pairs.values())} if lineage is not None else {}
    scales = parent_scales(lineage, store, hooks, set(pairs.values())) if lineage is not None else {}

    out = {k: {} for k in ("rel", "rel_lo", "rel_hi", "cos", "cos_lo", "cos_hi")}
    lens: dict[str, list[dict[str, Any]]] = {m: [] for m in pairs}
    shifts: dict[str, Tensor] = {}
    d_model = 0
    for hook in hooks:
        st = _hook_stats(store, hook, pairs, cfg)
        for m in pairs:
            v, b = st.shift[m], st.boot[m]
            d_model = v.numel()
            shifts[f"{m}|{hook}"] = v
            norm = max(st.parent_norm[m], 1e-12)
            lo, hi = _percentile(b.norm(dim=1) / norm, cfg.ci)
            for key, value in (("rel", float(v.norm()) / norm), ("rel_lo", lo), ("rel_hi", hi)):
                out[key].setdefault(m, []).append(value)
            scale = scales.get((pairs[m], hook), st.parent_scale[m])
            lens[m].append(_lens_entry(v, readouts.get(pairs[m]), scale, tok, target_id, cfg.top_k))
        for m, r in alignments:
            label = pair_label(m, r)
            c = float(_cos(st.shift[m], st.shift[r]))
            lo, hi = _percentile(_cos(st.boot[m], st.boot[r]), cfg.ci)
            for key, value in (("cos", c), ("cos_lo", lo), ("cos_hi", hi)):
                out[key].setdefault(label, []).append(value)
    order = [m for m in SHIFT_ORDER if m in pairs] + [m for m in pairs if m not in SHIFT_ORDER]
    info = {
        "positions": store.positions, "n_rows": store.n_rows, "n_bootstrap": cfg.n_bootstrap, "ci": cfg.ci,
        "bootstrap_seed": cfg.seed, "target": trait.target if trait is not None else None, "d_model": d_model, "config": asdict(cfg),
        "store_plan_hash": store.manifest.get("plan_hash"), "inputs_hash": store.manifest["inputs"]["content_hash"],
        "n_comparisons": len(hooks) * len(alignments), "model_order": order,
        "pair_order": [pair_label(m, r) for m, r in alignments], **(meta or {}),
    }
    return ActivationComparison(
        hooks=hooks, parents={m: pairs[m] for m in order},
        rel_norm={m: out["rel"][m] for m in order}, rel_norm_lo={m: out["rel_lo"][m] for m in order},
        rel_norm_hi={m: out["rel_hi"][m] for m in order},
        cos=out["cos"], cos_lo=out["cos_lo"], cos_hi=out["cos_hi"],
        lens={m: lens[m] for m in order}, meta=info, shifts=shifts,
    )


def parent_scales(lineage: Lineage, store: ActivationStore, hooks: Sequence[str], parents: set[str],
                  max_rows: int = 512, batch_size: int = 64) -> dict[tuple[str, str], float]:
    """(parent, hook) -> mean LayerNorm scale sqrt(var + eps) of the parent's activations over the
    positions the store's rule uses (per position, as the final norm would see them), on the first
    `max_rows` rows. The logit lens linearises the final norm at this scale."""
    inputs = store.inputs.select(slice(0, min(max_rows, store.n_rows)))
    eps = float(getattr(lineage.cfg, "eps", 1e-5))
    totals: dict[tuple[str, str], float] = {}
    count = 0.0
    for start in range(0, len(inputs), batch_size):
        batch = inputs.select(slice(start, start + batch_size))
        rule = store.positions
        if rule == "last":
            use = torch.zeros_like(batch.mask)
            use[torch.arange(len(batch)), batch.lengths - 1] = True
        elif isinstance(rule, list):
            use = torch.zeros_like(batch.mask)
            use[:, rule] = True
        else:
            use = batch.mask
        count += float(use.sum())
        for parent in parents:
            with torch.inference_mode():
                _, cache = lineage[parent].run_with_cache(batch.tokens.to(lineage.device), names_filter=list(hooks))
            for hook in hooks:
                a = cache[hook].float().cpu()
                if a.ndim != 3:
                    continue
                sigma = a.var(dim=-1, unbiased=False).add(eps).sqrt()
                totals[(parent, hook)] = totals.get((parent, hook), 0.0) + float(sigma[use].sum())
    return {k: v / max(count, 1.0) for k, v in totals.items()}


def _lens_entry(v: Tensor, readout: tuple[Tensor, Tensor, bool] | None, scale: float, tok: Any,
                target_id: int | None, top_k: int) -> dict[str, Any]:
    if readout is None or readout[1].shape[1] != v.numel():
        return {}  # not a residual-stream hook, or no unembedding known
    gamma, w_u, centred = readout
    delta = logit_lens(v, gamma, w_u, scale, centred)
    top = torch.topk(delta, min(top_k, delta.numel()))
    ids = top.indices.tolist()
    entry: dict[str, Any] = {
        "top_ids": ids,
        "top_tokens": [tok.decode([i]) if tok is not None else str(i) for i in ids],
        "top_delta": [float(x) for x in top.values],
    }
    if target_id is not None:
        entry["target_delta"] = float(delta[target_id])
        entry["target_rank"] = int((delta > delta[target_id]).sum()) + 1
    return entry


# --------------------------------------------------------------------------- across seeds


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
    command: str = "workbench.compare.aggregate_seeds(results)"

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

    def figures(self) -> dict[str, Any]:
        x = [_short(h) for h in self.hooks]
        lines = {}
        for p in self.values:
            m, s = np.array(self.mean(p)), np.nan_to_num(np.array(self.std(p)))
            lines[p] = (m.tolist(), (m - s).tolist(), (m + s).tolist())
        norm_lines = {}
        for mdl, per_hook in self.norms.items():
            stats = [over_seeds(v) for v in per_hook]
            m = np.array([st.mean_or(float("nan")) for st in stats])
            s = np.array([st.sd_or(0.0) for st in stats])
            norm_lines[mdl] = (m.tolist(), (m - s).tolist(), (m + s).tolist())
        label = f"{len(self.seeds)} seeds, mean ± std; {self.meta.get('data', '')}"
        return {
            "alignment": line_figure(x, lines, f"cos(v_model, v_reference) per layer ({label})",
                                     "cosine of mean shifts", null_band=2 / math.sqrt(max(self.meta.get("d_model", 1), 1))),
            "shift_norms": line_figure(x, norm_lines, f"|v_model| / |a_parent| per layer ({label})",
                                       "relative shift norm"),
        }

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
            row.details.update(layer=_short(hook), n_seeds=len(self.seeds))
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
            lines.append(f"{_short(hook):<14}" + "".join(f"{c:>26}" for c in cells))
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
