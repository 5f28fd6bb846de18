"""A lineage model's forward as a pure function of its clean parameters (detached views, no copy).

`AlignmentModel.logits(params, tokens)` is what every per-example score differentiates: the
`FunctionalModel` engine when the models are workbench-native, else `functional_call` on the
bridge with `tie_weights=False` AND one wrapped name per parameter (the default tie_weights=True,
or passing every alias path of a parameter, leaves the swapped-in tensors in a transformer-lens
4.3 bridge after the call: DESIGN.md section 4). The live models are never written to.
Directions are mappings over the Lineage's clean keys (dicts, or `LazyParams` made key by key);
`check_direction` puts one on the model's device and dtype, lazily.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from workbench.core.errors import ConfigError, DataError, unknown_name
from workbench.core.lazy_params import LazyParams, shape_of
from workbench.core.lineage import Lineage
from workbench.core.models import NATIVE_CONFIG_ATTR
from workbench.engines.tangent import loss_tangents

if TYPE_CHECKING:
    from workbench.engines.objective import Batch, Objective

Params = dict[str, Tensor]
Backend = Literal["auto", "functional", "bridge"]


class AlignmentModel:
    """One lineage model's forward as a pure function `logits(params, tokens)` of clean-keyed
    parameters, plus detached views (no copies) of its own parameters (`params`) and of any
    other model's (`params_of`). Nothing here writes to a live model.

    backend: "functional" (the `FunctionalModel` engine; workbench-native models only),
    "bridge" (`torch.func.functional_call` on the bridge with `tie_weights=False` and one name per
    owning module, see `_one_name_per_module`), or "auto" (functional when possible).
    """

    def __init__(self, lineage: Lineage, name: str = "base", backend: Backend = "auto"):
        if backend not in ("auto", "functional", "bridge"):
            raise unknown_name("backend", backend, ("auto", "functional", "bridge"))
        self.lineage, self.name = lineage, name
        bridge = lineage[name]
        native = getattr(bridge, NATIVE_CONFIG_ATTR, None) is not None
        if backend == "auto":
            backend = "functional" if native else "bridge"
        if backend == "functional" and not native:
            raise ConfigError(f"backend='functional' needs workbench-native models; {name!r} is not. Use backend='bridge'.")
        self.backend = backend
        self.params: Params = self.params_of(name)
        if backend == "functional":
            from workbench.engines.functional import FunctionalModel

            fm = FunctionalModel.from_bridge(bridge)
            self._buffers = {k: v for k, v in fm.w.items() if k not in self.params and k not in lineage.aliases}
            self._shape = (fm.n_layers, fm.n_heads, fm.eps, fm.act)
            # tied weights (e.g. unembed = embed): the alias key reads its canonical parameter
            self._aliases = {a: ks[0] for a, ks in lineage.aliases.items() if len(ks) == 1}
        else:
            self._bridge = bridge
            self._names = _one_name_per_module(bridge, lineage.actual_names(name))
            self._hf_models = _hf_pretrained_modules(bridge)

    @property
    def keys(self) -> list[str]:
        return list(self.params)

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    @property
    def score_dtype(self) -> torch.dtype:
        """The dtype per-example scores are accumulated and returned in (see `score_dtype`)."""
        return score_dtype(self.dtype)

    def params_of(self, name: str) -> Params:
        """A lineage model's clean parameters as detached VIEWS of the live ones (no copy: a
        whole model's bytes saved per call). Nothing here writes into them: `logits` swaps them
        in with `functional_call` (or reads them in `FunctionalModel`) and every update builds
        new tensors (`theta - eta * g`, `point_on_line`'s own buffer). They follow the live
        model, so an analysis that edits a live model in place must not hold them across it."""
        return {k: p.detach() for k, p in self.lineage.params(name).items()}

    def logits(self, params: Mapping[str, Tensor], tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
        # The math attention kernel is made of primitive ops, so forward-mode AD and vmap work through it.
        with sdpa_kernel(SDPBackend.MATH):
            if self.backend == "functional":
                from workbench.engines.functional import FunctionalModel

                return FunctionalModel(self._weights(params), *self._shape)(tokens)
            full = {n: params[k] for k, names in self._names.items() for n in names}
            with _no_padding_check(self._hf_models):
                logits = functional_call(self._bridge, full, (tokens,), tie_weights=False, strict=False)
            return logits.to(tokens.device)  # a device map leaves them on the unembedding's device

    def _weights(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Functional backend: the full weight dict (buffers, `params`, tied keys reading their canonical one)."""
        return {**self._buffers, **params, **{a: params[c] for a, c in self._aliases.items()}}

    @property
    def has_explicit_tangents(self) -> bool:
        """Whether `loss_tangents` (the hand-written forward mode of `workbench.engines.tangent`) applies."""
        return self.backend == "functional"

    def loss_tangents(
        self, params: Mapping[str, Tensor], direction: Mapping[str, Tensor], objective: Objective, batch: Batch
    ) -> Float[Tensor, "batch seq_1"]:
        """d/ds L_{i,t}(params + s direction) by `workbench.engines.tangent` (functional backend only)."""
        if not self.has_explicit_tangents:
            raise ConfigError("Explicit tangents need backend='functional'; use method='func' (torch.func.jvp).")
        dw = {**direction, **{a: direction[c] for a, c in self._aliases.items() if c in direction}}
        ids = None if objective.ids is None else objective.ids.to(batch.tokens.device)
        soft = objective.kind == "soft"
        written = batch.targets if not soft and ids is not None else None  # Objective.targets already indexed them
        n_layers, n_heads, eps, act = self._shape
        return loss_tangents(self._weights(params), dw, batch.tokens, batch.mask, batch.targets if soft else None, ids,
                             n_layers=n_layers, n_heads=n_heads, eps=eps, act=act, written=written)


_PADDING_CHECK = "warn_if_padding_and_no_attention_mask"


@contextmanager
def _no_padding_check(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Switch off transformers' padding warning (`PreTrainedModel.warn_if_padding_and_no_attention_mask`)
    on `modules` for the block.

    With a `pad_token_id` in its config, a GPT-2 forward without an attention mask checks whether
    the ids hold the pad id, a data-dependent `.item()` that `vmap` (per-example gradients) cannot
    run. No mask is needed here: rows are right-padded, attention is causal, and padded positions
    never count in a loss, so the check (a warning only) is skipped rather than a mask passed.
    """
    for m in modules:
        m.__dict__[_PADDING_CHECK] = _skip_padding_check
    try:
        yield
    finally:
        for m in modules:
            m.__dict__.pop(_PADDING_CHECK, None)


def _hf_pretrained_modules(bridge: torch.nn.Module) -> list[torch.nn.Module]:
    """The Hugging Face `PreTrainedModel`s inside a bridge (its wrapped `original_model`, which is
    not a registered submodule, and that model's own, e.g. GPT2LMHeadModel.transformer)."""
    from transformers import PreTrainedModel

    roots = [bridge, *([original] if isinstance(original := getattr(bridge, "original_model", None), torch.nn.Module)
                       else [])]
    found = {id(m): m for r in roots for m in r.modules() if isinstance(m, PreTrainedModel)}
    return list(found.values())


def _skip_padding_check(input_ids: Tensor, attention_mask: Tensor | None) -> None:
    return None


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision models (bf16, fp16), else the model's dtype: scores summed over
    positions and groups keep float32 precision, and numpy (which has no bfloat16) can read them."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def _one_name_per_module(bridge: torch.nn.Module, actual: Mapping[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """For each clean key, one wrapped parameter name per distinct owning module.

    The bridge reaches each module under several paths (`blocks.0.ln1` and
    `layers.0._original_component.ln1`); passing every path to `functional_call` (even with
    tie_weights=False) leaves the swapped-in tensors in the model after the call, because the
    restore of one path re-installs what the other swapped in (tested in test_gradients.py). A
    parameter truly shared by two modules (tied embed/unembed) keeps one name per module, so
    both uses see the swapped tensor.
    """
    out: dict[str, list[str]] = {}
    for key, names in actual.items():
        seen: set[int] = set()
        for name in names:
            owner = bridge.get_submodule(name.rsplit(".", 1)[0]) if "." in name else bridge
            if id(owner) not in seen:
                seen.add(id(owner))
                out.setdefault(key, []).append(name)
    return out


def check_direction(model: AlignmentModel, direction: Mapping[str, Tensor], name: str = "direction") -> LazyParams:
    """The direction over every key of the model, on its device and dtype (missing keys zero),
    checked now (unknown keys, shapes) and converted key by key when read (`LazyParams`): a lazy
    direction stays lazy, a dict of tensors already on the model's device and dtype is not copied."""
    unknown = [k for k in direction if k not in model.params]
    if unknown:
        raise unknown_name("parameter key", unknown[0], model.params, fix=f"Keys of {name} must be the Lineage's clean keys.")
    for k in direction:
        shape, want = shape_of(direction, k), model.params[k].shape
        if tuple(shape) != tuple(want):
            raise DataError(f"{name}[{k!r}] has shape {tuple(shape)}; the parameter has {tuple(want)}.")

    def value(k: str) -> Tensor:
        p = model.params[k]
        return direction[k].detach().to(p.device, p.dtype) if k in direction else torch.zeros_like(p)

    return LazyParams({k: p.shape for k, p in model.params.items()}, value)


__all__ = ["AlignmentModel", "Backend", "Params", "check_direction", "score_dtype"]
