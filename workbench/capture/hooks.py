"""Hook names: the default lists the analyses read, and checks of names against a model.

One canonical list, `stream_hooks`, names the residual stream and what writes into it in forward
order; each analysis reads a named subset of it, so the defaults live in one place:
- `residual_hooks`: the stream itself (before block 0, then mid and post of every block), what
  `compare` follows through depth;
- `patching_hooks`: the embeddings and every write into the stream (attention out, mid, MLP out,
  post), what activation patching swaps (the stream before block 0 is the embeddings' sum);
- `probe_hooks`: the same without the positional embedding (identical for every row at a
  position, so it carries nothing a probe of the rows could read), what the main job reads.

`resolve_hooks` checks names (or the bridge's structural aliases) against a model before any work;
`run_cached` runs a model for its cache no further than the asked hooks need.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from workbench.core.errors import ConfigError, unknown_name

if TYPE_CHECKING:
    from torch import Tensor
    from transformer_lens.model_bridge import TransformerBridge

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_BEFORE_BLOCKS = ("hook_embed", "hook_pos_embed", "embed.", "pos_embed.")

RESIDUAL = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
"""The stream's own states (last name component)."""
PATCHING = ("hook_embed", "hook_pos_embed", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
"""The embeddings and every write into the stream."""
PROBE = ("hook_embed", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
"""What the main job's probes read: PATCHING without the positional embedding."""


# --------------------------------------------------------------------------- default lists


def stream_hooks(n_layers: int, kinds: Sequence[str] | None = None) -> list[str]:
    """The residual stream and what writes into it, in forward order: the token and positional
    embeddings, the stream before block 0, then per block the attention output, the mid stream,
    the MLP output and the stream after the block. `kinds` keeps only hooks whose last name
    component is one of them (e.g. RESIDUAL), in the same order."""
    hooks = ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"]
    for i in range(n_layers):
        hooks += [f"blocks.{i}.hook_attn_out", f"blocks.{i}.hook_resid_mid", f"blocks.{i}.hook_mlp_out",
                  f"blocks.{i}.hook_resid_post"]
    if kinds is None:
        return hooks
    return [h for h in hooks if h.rsplit(".", 1)[-1] in kinds]


def residual_hooks(n_layers: int) -> list[str]:
    """The residual stream in depth order: before block 0, then mid and post of every block."""
    return stream_hooks(n_layers, RESIDUAL)


def patching_hooks(n_layers: int) -> list[str]:
    """The embeddings and every write into the residual stream, in forward order."""
    return stream_hooks(n_layers, PATCHING)


def probe_hooks(n_layers: int) -> list[str]:
    """hook_embed, then per layer the attention output, mid residual, MLP output and residual out."""
    return stream_hooks(n_layers, PROBE)


# --------------------------------------------------------------------------- names against a model


def hook_aliases(bridge: TransformerBridge) -> dict[str, list[str]]:
    """Classic hook name -> every name of the same HookPoint (itself first, then aliases sorted).

    The bridge registers one HookPoint under a classic name (`blocks.0.hook_resid_post`) and a
    structural one (`blocks.0.hook_out`); the classic names are the keys of its alias maps.
    """
    classic = set(getattr(bridge, "hook_aliases", {}) or {})
    collect = getattr(bridge, "_collect_hook_aliases_from_registry", None)
    if callable(collect):
        classic |= set(collect())
    groups: dict[int, list[str]] = {}
    for name, hp in bridge.hook_dict.items():
        groups.setdefault(id(hp), []).append(name)
    out = {}
    for names in groups.values():
        names = sorted(names)
        named = [n for n in names if n in classic]
        plain = [n for n in names if not n.endswith((".hook_in", ".hook_out"))]
        canonical = (named or plain or names)[0]
        out[canonical] = [canonical, *[n for n in names if n != canonical]]
    return out


def resolve_hooks(bridge: TransformerBridge, hooks: str | Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Check hook names (or aliases) against a model; return (classic names, each one's aliases).

    Names that are aliases of one HookPoint collapse into one entry, so each tensor is stored once.
    """
    hooks = [hooks] if isinstance(hooks, str) else list(hooks)
    if not hooks:
        raise ConfigError("No hooks given. Name at least one, e.g. 'blocks.0.hook_resid_post'.")
    groups = hook_aliases(bridge)
    canonical_of = {name: c for c, names in groups.items() for name in names}
    for h in hooks:
        if h not in canonical_of:
            raise unknown_name("hook", h, canonical_of, fix="Use TransformerLens hook names (see bridge.hook_dict).")
    ordered = list(dict.fromkeys(canonical_of[h] for h in hooks))
    return ordered, {c: groups[c] for c in ordered}


def hook_layer(name: str, n_layers: int) -> int:
    """Block index a hook lives in: -1 before the blocks, n_layers after them (ln_final, unembed)."""
    m = _BLOCK.match(name)
    if m:
        return int(m.group(1))
    return -1 if name.startswith(_BEFORE_BLOCKS) else n_layers


def stop_layer(hooks: Sequence[str], n_layers: int) -> int | None:
    """`stop_at_layer` that still runs every asked hook (None: run the whole model)."""
    deepest = max(hook_layer(h, n_layers) for h in hooks)
    return deepest + 1 if deepest + 1 < n_layers else None


HEAD_INPUT = "ln_final.hook_in"
"""The hook point where the final norm and the unembedding begin: a capture that reads nothing
past the blocks stops here, not after vocabulary-sized logits (152k x rows x positions at 7B)."""


def run_cached(bridge: TransformerBridge, tokens: Tensor, hooks: Sequence[str], stop: int | None) -> Any:
    """`bridge.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop)`, and when `stop` is
    None but every hook lies in a block (the deepest in the last one), stopped before the final
    norm and the unembedding as well (the bridge's `stop_at_layer` cannot express "after the last
    block"): the same cache without the logits' memory and time."""
    n_layers = int(bridge.cfg.n_layers)
    point = bridge.hook_dict.get(HEAD_INPUT)
    if stop is not None or point is None or max(hook_layer(h, n_layers) for h in hooks) >= n_layers:
        return bridge.run_with_cache(tokens, names_filter=list(hooks), stop_at_layer=stop)[1]
    from transformer_lens.model_bridge.exceptions import StopAtLayerException

    def halt(tensor: Tensor, *, hook: Any) -> Tensor:
        raise StopAtLayerException(tensor)  # run_with_cache returns the cache gathered so far

    handle = point.add_hook(halt)
    try:
        return bridge.run_with_cache(tokens, names_filter=list(hooks))[1]
    finally:
        handle.hook.remove()
        point.fwd_hooks[:] = [h for h in point.fwd_hooks if h is not handle]


def with_hooks(config: Any, lineage: Any) -> Any:
    """`config` with `hooks` filled in from the models when it is None."""
    if config.hooks is not None:
        return config
    return dataclasses.replace(config, hooks=probe_hooks(int(lineage.cfg.n_layers)))
