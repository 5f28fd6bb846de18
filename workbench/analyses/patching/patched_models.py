"""The working model delta patching scores patched weights in: `PatchedModels`, plus the
norm-matched random deltas and per-layer group sets its controls and tables use.

Patched weights are taken whole from the donor model (`w = student[k] if k in G else base[k]`),
so patching every group reproduces the student bit for bit and patching none the base. Each
patched state is loaded into ONE working model and no bridge is rebuilt: by default
(`engine="auto"`) a `FunctionalModel` (a pure function of the clean state dict; a new patched
state is one dict update, ~3x faster than the hooked bridge per evaluation here), or
`engine="bridge"`: a working copy (`Lineage.copy_model`) whose live parameters are overwritten
in place (only the keys that changed since the last evaluation). `python -m workbench.bench
patching` times both.
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
        if not on_device(work, self.device):
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

