"""The working model delta patching scores patched weights in: `PatchedModels`, plus the
norm-matched random deltas and per-layer group sets its controls and tables use.

Patched weights are taken whole from the donor model (`w = student[k] if k in G else base[k]`),
so patching every group reproduces the student bit for bit and patching none the base. No bridge
is rebuilt and no model's weights are copied whole: states are views of the lineage's live
parameters, and by default (`engine="auto"`) a `FunctionalModel` (a pure function of the clean
state dict, ~3x faster than the hooked bridge per evaluation here; workbench-native models only)
scores them, or `engine="bridge"` writes the state into the lineage model it draws most of its
weights from, in place, and restores that model's own weights right after (try/finally): the only
extra memory is a copy of the keys that differ from that model (one group for a single-group
patch or a leave-one-out, at most half the model for a greedy set), never a whole-model copy.
On a `device` other than the lineage's, the bridge engine works in one copy of the base there.
`python -m workbench.bench patching` times the engines; `python -m workbench.bench memory`
measures the bytes per parameter at peak.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from workbench.core.errors import ConfigError, unknown_name
from workbench.core.lineage import Lineage, ParamGroup, param_space
from workbench.core.models import copy_model, resolve_device
from workbench.trait import LogitsFn

ENGINES = ("auto", "functional", "bridge")


def on_device(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether the model's parameters are on `device` ("cuda" matches any CUDA index)."""
    d = next(model.parameters()).device
    return d.type == device.type and (device.index is None or d.index == device.index)


class PatchedModels:
    """A metric (the trait's log-odds: `Trait.log_odds`) of models assembled key by key from the
    lineage's weights.

    Every evaluation takes a full clean state (canonical key -> tensor) and scores it: in a
    `FunctionalModel` (engine "functional"), or (engine "bridge") in the lineage model the state
    shares most weights with, its other keys overwritten in place and restored after the
    evaluation. States of lineage models are views of their live parameters on `device`. Models with tied weights (`Lineage.aliases`) use the bridge: a state
    swap in the functional model would leave the tied copy behind.
    """

    def __init__(self, lin: Lineage, base: str, metric: Callable[[LogitsFn], float], *, engine: str = "auto",
                 device: str | torch.device | None = None):
        if engine not in ENGINES:
            raise unknown_name("engine", engine, ENGINES)
        self.lin, self.metric, self._base = lin, metric, base
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
        self.engine, self._work = "bridge", None
        if not on_device(lin[base], self.device):  # another device: one working copy of the base there
            work = copy_model(lin.copy_model(base), device=self.device)
            self._work, self._live = work, param_space(work).params
            self._loaded: dict[str, Tensor] = {}

    def state(self, name: str) -> dict[str, Tensor]:
        """Canonical key -> the model's weights on `device` (views of the live parameters when the
        lineage is there, so no copy; never written to)."""
        if name not in self._states:
            self._states[name] = {k: p.detach().to(self.device) for k, p in self.lin.params(name).items()}
        return self._states[name]

    def mix(self, donor: str, recipient: str, keys: set[str]) -> dict[str, Tensor]:
        """The recipient's state with the donor's weights on `keys` (tensors shared, not copied)."""
        d, r = self.state(donor), self.state(recipient)
        return {k: (d[k] if k in keys else r[k]) for k in r}

    def _host(self, state: Mapping[str, Tensor]) -> str:
        """The lineage model (among the states taken so far) that `state` shares the most weights with."""
        if not self._states:
            self.state(self._base)

        def shared(name: str) -> int:
            own = self._states[name]
            return sum(v.numel() for k, v in state.items() if own.get(k) is v)

        return max(self._states, key=shared)

    @torch.no_grad()
    def log_odds(self, state: Mapping[str, Tensor]) -> float:
        self.evaluations += 1
        if self.engine == "functional":
            from workbench.engines.functional import FunctionalModel

            fm = self._fm
            patched = FunctionalModel({**fm.w, **state}, fm.n_layers, fm.n_heads, fm.eps, fm.act)
            device = self.device
            return self.metric(lambda t: patched(t.to(device)))
        if self._work is not None:
            for k, v in state.items():
                if self._loaded.get(k) is not v:
                    self._live[k].copy_(v)
                    self._loaded[k] = v
            return self.metric(self._work)
        host = self._host(state)
        own, live = self._states[host], self.lin.params(host)
        saved: dict[str, Tensor] = {}
        try:
            for k, v in state.items():
                if own[k] is not v:
                    saved[k] = live[k].detach().clone()
                    live[k].copy_(v)
            return self.metric(self.lin[host])
        finally:
            for k, v in saved.items():
                live[k].copy_(v)


def norm_matched_random(delta: Mapping[str, Tensor], keys: set[str], gen: torch.Generator) -> dict[str, Tensor]:
    """A Gaussian direction with the same norm as `delta` on every key in `keys` (zero elsewhere)."""
    from workbench.analyses.delta_stats import CHUNK, sq_norm

    out = {}
    for k in sorted(keys):  # a fixed draw order: a set of strings iterates in a per-process hash order
        d = delta[k]  # read once: `delta` may compute it on the fly
        norm = d.double().norm() if d.numel() <= CHUNK else torch.tensor(sq_norm(d), dtype=torch.float64).sqrt()
        r = torch.randn(d.shape, generator=gen, dtype=torch.float64)
        out[k] = r.mul_(norm.to(r.device) / r.norm().clamp(min=1e-30)).to(d)
        del r, d
    return out


def _spans(numel: int, chunk: int) -> list[tuple[int, int]]:
    """[i, j) spans of `chunk` elements (a multiple of 16) covering numel, a short tail (< 16)
    merged into the span before it: chunked `torch.randn` on a CPU generator then draws exactly
    the numbers (and advances the generator exactly as far) as one whole draw."""
    spans = [(i, min(i + chunk, numel)) for i in range(0, numel, chunk)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < 16:
        spans[-2:] = [(spans[-2][0], numel)]
    return spans


def norm_matched_patch(donor: Mapping[str, Tensor], recipient: Mapping[str, Tensor], keys: set[str],
                       gen: torch.Generator) -> dict[str, Tensor]:
    """recipient[k] + a Gaussian direction with the norm of donor[k] - recipient[k], per key in `keys`:
    the same draws as `norm_matched_random` on the lazy delta, added to the recipient. A key larger
    than `delta_stats.CHUNK` elements is never held whole in float64 (nor is its delta): its norms
    are accumulated over chunks and the draws made twice from the same generator state (once for
    the norm, once to write), so the only full-size tensor is the patched weight itself (equal to
    the whole-key computation up to the float64 norm's summation order)."""
    from workbench.analyses.delta_stats import CHUNK, Difference, sq_norm

    chunk = CHUNK // 16 * 16 or 16
    out = {}
    for k in sorted(keys):  # a fixed draw order: a set of strings iterates in a per-process hash order
        b = recipient[k]
        if b.numel() <= CHUNK:
            out[k] = b + norm_matched_random({k: donor[k] - b}, {k}, gen)[k]
            continue
        norm = torch.tensor(sq_norm(Difference(donor[k], b)), dtype=torch.float64).sqrt()
        spans = _spans(b.numel(), chunk)
        start, r_sq = gen.get_state(), 0.0
        for i, j in spans:
            r = torch.randn(j - i, generator=gen, dtype=torch.float64)
            r_sq += float(r @ r)
            del r
        gen.set_state(start)
        scale = norm / torch.tensor(r_sq, dtype=torch.float64).sqrt().clamp(min=1e-30)
        w = torch.empty_like(b)
        flat, b_flat = w.view(-1), b.reshape(-1)
        for i, j in spans:
            r = torch.randn(j - i, generator=gen, dtype=torch.float64)
            flat[i:j] = b_flat[i:j] + r.mul_(scale).to(b)
            del r
        out[k] = w
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

