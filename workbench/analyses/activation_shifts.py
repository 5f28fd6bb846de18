"""The activation-shift comparison itself: `compare` streams each hook's rows once and measures
every model's mean shift against its parent, its relative norm and the alignments between
shifts, with Poisson-bootstrap intervals over inputs (rows resampled jointly for every model, so
cosines are paired). `workbench.analyses.compare` describes the method and runs an example.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from workbench.analyses.logit_lens import final_readout, lens_entry, parent_scales
from workbench.analyses.shift_results import ActivationComparison, pair_label
from workbench.capture.hooks import hook_layer
from workbench.capture.prompted import bridge_of, readable
from workbench.capture.store import ActivationStore, weights_sha256
from workbench.core.errors import ConfigError, IncompatibleModelsError, expect_type
from workbench.core.lineage import Lineage
from workbench.trait import Trait, check_trait

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


def _check_models(store: ActivationStore, lineage: Lineage | None, models: list[str]) -> None:
    if lineage is None:
        return
    for m in models:
        if not readable(lineage, m):
            raise IncompatibleModelsError(f"The artifact holds {m!r} but the lineage has no such model: pass the lineage "
                                          "the activations were captured from.")
        info = store.model_info(m)
        if lineage.is_prompted(m) and info.get("system_prompt") != lineage.prompted[m].prefix.system_prompt:
            raise IncompatibleModelsError(
                f"Prompted {m!r} in the lineage has another system prompt than the one captured in {store.directory}. "
                "Pass the lineage the activations were captured from, or capture again.")
        if weights_sha256(bridge_of(lineage, m).state_dict()) != info["weights_sha256"]:
            raise IncompatibleModelsError(
                f"Model {m!r} in the lineage is not the one captured in {store.directory} (weight hashes differ). "
                "Pass the lineage the activations were captured from, or capture again.")


def compare(lineage: Lineage | None, store: ActivationStore, config: CompareConfig | None = None,
            *, trait: Trait | None = None, meta: dict[str, Any] | None = None) -> ActivationComparison:
    """Shifts of every captured model against its parent, per hook, with alignments and logit lens.

    lineage: the models captured in `store`, for the logit lens (final norm + unembedding) and
        to check the weights match the artifact; None skips both. Its `tokenizer` (anything with
        `decode(ids)`), when set, names the lens's top tokens.
    store: the activations of the analysis's inputs: an artifact holding each model and its
        parent (base, and base_x for cross), written by `capture_activations`.
    trait: its target's logit-lens change is reported per shift (None: no target).
    meta: extra labels recorded in the result (e.g. {"seed": 0, "data": "teacher"}).
    """
    expect_type(store, ActivationStore, "compare's store", "Pass compare_activations(lineage, store, config): "
                "the store is what capture_activations returned (or ActivationStore.open(dir)).")
    if lineage is not None:
        expect_type(lineage, Lineage, "compare's lineage", "Pass the Lineage the store was captured from, or None.")
    if trait is not None:
        check_trait(trait, lineage.d_vocab if lineage is not None else trait.vocab_size or 0, "compare's trait")
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
    readouts = {p: final_readout(lineage, p) for p in set(pairs.values())} if lineage is not None else {}
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
            lens[m].append(lens_entry(v, readouts.get(pairs[m]), scale, tok, target_id, cfg.top_k))
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
