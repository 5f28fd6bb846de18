"""The clean parameter key space of one model, and its (layer, component) groups.

`bridge.state_dict()` names parameters `blocks.0.attn.q.weight`, while `named_parameters()`
uses the wrapped model's paths (with `_original_component`). `param_space(bridge)` maps clean
keys to the LIVE parameters; buffers (a zero `unembed.bias`, causal masks) are left out, and
tensors that share memory (GPT-2's tied embed/unembed, a joint qkv beside its split q/k/v
views) count once: the other keys are recorded in `ParamSpace.aliases`. `make_groups` splits
the clean keys into (layer, component) groups, the unit that analyses stream over.

>>> [g.name for g in make_groups(["blocks.0.mlp.in.weight", "embed.W_E", "blocks.0.ln1.w"])]
['embed', 'blocks.0.ln1', 'blocks.0.mlp.in']
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

_COMPONENT_ORDER = (
    "ln1", "attn.q", "attn.k", "attn.v", "attn.qkv", "attn.o", "ln2", "mlp.gate", "mlp.in", "mlp.out",
)  # fmt: skip
_TOP_ORDER = ("embed", "pos_embed")
_BOTTOM_ORDER = ("ln_final", "unembed")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


# --------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class ParamGroup:
    """Parameters of one (layer, component): e.g. `blocks.0.attn.q` holds q.weight and q.bias."""

    name: str
    layer: int | None
    component: str
    keys: tuple[str, ...]

    def numel(self, params: Mapping[str, Tensor]) -> int:
        return sum(params[k].numel() for k in self.keys)


def group_of(key: str) -> tuple[str, int | None, str]:
    """Clean key -> (group name, layer, component).

    >>> group_of("blocks.1.mlp.in.weight")
    ('blocks.1.mlp.in', 1, 'mlp.in')
    """
    group = key.rsplit(".", 1)[0] if "." in key else key
    m = _BLOCK_RE.match(group)
    if m:
        return group, int(m.group(1)), m.group(2)
    return group, None, group


def _group_sort_key(group: ParamGroup, first_seen: dict[str, int]) -> tuple:
    """Canonical order: embeddings, then layer by layer (ln1, attn, ln2, mlp), then final ln, unembed."""
    seen = first_seen[group.name]
    if group.layer is not None:
        order = _COMPONENT_ORDER
        rank = order.index(group.component) if group.component in order else len(order)
        return (1, group.layer, rank, seen)
    if group.component in _TOP_ORDER:
        return (0, 0, _TOP_ORDER.index(group.component), seen)
    if group.component in _BOTTOM_ORDER:
        return (3, 0, _BOTTOM_ORDER.index(group.component), seen)
    return (2, 0, 0, seen)


def make_groups(keys: list[str]) -> list[ParamGroup]:
    """Partition clean keys into (layer, component) groups, in canonical order."""
    members: dict[str, list[str]] = {}
    info: dict[str, tuple[int | None, str]] = {}
    for key in keys:
        name, layer, component = group_of(key)
        members.setdefault(name, []).append(key)
        info[name] = (layer, component)
    first_seen = {name: i for i, name in enumerate(members)}
    groups = [ParamGroup(name, info[name][0], info[name][1], tuple(ks)) for name, ks in members.items()]
    return sorted(groups, key=lambda g: _group_sort_key(g, first_seen))


# --------------------------------------------------------------------------- parameter key space


@dataclass
class ParamSpace:
    """One model's clean parameter key space.

    params: canonical clean key -> live `nn.Parameter` (each element of memory counted once).
    aliases: dropped clean key -> the canonical keys that hold its memory (tied or joint weights).
    actual_names: canonical clean key -> every `bridge.named_parameters(remove_duplicate=False)`
        name of that Parameter object (what `torch.func.functional_call` takes).
    stored_in_out: weight keys stored [in, out] (GPT-2's Conv1D) rather than nn.Linear's
        [out, in]: analyses that tell a matrix's output side from its input side read this.
    """

    params: dict[str, nn.Parameter]
    aliases: dict[str, tuple[str, ...]]
    actual_names: dict[str, tuple[str, ...]]
    stored_in_out: frozenset[str] = frozenset()


def _storage_index(t: Tensor) -> Tensor:
    """Element indices of `t` inside its storage (exact, for views that share memory)."""
    n = t.untyped_storage().nbytes() // t.element_size()
    index = torch.arange(n, device="cpu").as_strided(tuple(t.shape), t.stride(), t.storage_offset())
    return index.reshape(-1)


def storage_id(t: Tensor) -> int:
    """Which memory `t` lives in; tensors without memory (meta device) count as their own."""
    ptr = t.untyped_storage().data_ptr()
    return ptr if ptr != 0 else id(t)


def _view_id(t: Tensor) -> tuple:
    return (storage_id(t), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def param_space(bridge: TransformerBridge) -> ParamSpace:
    """Build the clean key space of `bridge` (see `ParamSpace`)."""
    live = {id(p) for p in bridge.parameters()}
    raw = bridge.state_dict(keep_vars=True)
    candidates = {k: v for k, v in raw.items() if isinstance(v, nn.Parameter) and id(v) in live}

    params: dict[str, nn.Parameter] = {}
    aliases: dict[str, tuple[str, ...]] = {}
    by_storage: dict[int, list[str]] = {}
    for key, p in candidates.items():
        by_storage.setdefault(storage_id(p), []).append(key)

    keep: set[str] = set()
    for keys in by_storage.values():
        if len(keys) == 1:
            keep.add(keys[0])
            continue
        # Identical views (tied weights): the first key in state-dict order is canonical.
        first_of_view: dict[tuple, str] = {}
        distinct: list[str] = []
        for key in keys:
            vid = _view_id(candidates[key])
            if vid in first_of_view:
                aliases[key] = (first_of_view[vid],)
            else:
                first_of_view[vid] = key
                distinct.append(key)
        # Different views of one storage (joint qkv beside split q, k, v): keep the smallest
        # views; a view whose memory they already cover is an alias of them.
        if len(distinct) == 1:
            keep.add(distinct[0])
            continue
        distinct.sort(key=lambda k: candidates[k].numel())
        first = candidates[distinct[0]]
        owner = torch.full((first.untyped_storage().nbytes() // first.element_size(),), -1, dtype=torch.long)
        for i, key in enumerate(distinct):
            idx = _storage_index(candidates[key])
            held = owner[idx]
            holders = [distinct[j] for j in held[held >= 0].unique().tolist()]
            if holders and bool((held >= 0).all()):
                aliases[key] = tuple(holders)
                continue
            if holders:
                warnings.warn(
                    f"Parameter {key} partly overlaps {holders}; it is kept, so some "
                    "elements are counted twice in the clean key space.",
                    stacklevel=2,
                )
            owner[idx] = torch.where(held < 0, i, held)
            keep.add(key)

    for key, p in candidates.items():  # state-dict order
        if key in keep:
            params[key] = p

    names_of: dict[int, list[str]] = {}
    for name, p in bridge.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(name)
    actual = {k: tuple(names_of.get(id(p), ())) for k, p in params.items()}
    modules = bridge.modules() if hasattr(bridge, "modules") else ()
    conv1d = {id(m.weight) for m in modules
              if type(m).__name__ == "Conv1D" and isinstance(getattr(m, "weight", None), nn.Parameter)}
    in_out = frozenset(k for k, p in params.items() if id(p) in conv1d)
    return ParamSpace(params=params, aliases=aliases, actual_names=actual, stored_in_out=in_out)


def uncovered_parameters(bridge: TransformerBridge, space: ParamSpace | None = None) -> list[str]:
    """Names of parameters whose memory no canonical clean key covers (a check; should be empty).

    Note: after `bridge.to(...)` a GPT-2 bridge's split q/k/v stop being views of the joint
    `c_attn` weight, which is then reported here; forward reads the split ones, so this is harmless.
    """
    space = space or param_space(bridge)
    covered: dict[int, Tensor] = {}
    for p in space.params.values():
        n = p.untyped_storage().nbytes() // p.element_size()
        mask = covered.setdefault(storage_id(p), torch.zeros(n, dtype=torch.bool))
        mask[_storage_index(p)] = True
    missing = []
    for name, p in bridge.named_parameters():
        mask = covered.get(storage_id(p))
        if mask is None or not bool(mask[_storage_index(p)].all()):
            missing.append(name)
    return missing
