"""Patch a hook so that the patched value is what flows on through the residual stream.

Replacing a HookPoint's output is not always a patch of what its name says. The bridge's
`blocks.{i}.hook_resid_mid` is an alias of `ln2.hook_in`, the *input of the MLP's norm*: HF's
decoder layer keeps its own copy of the residual (`residual = h; h = mlp(ln2(h)); h = residual +
h`), so replacing that hook changes only what the MLP reads while the residual add keeps the
recipient's value (the patched run's resid_post was the recipient's resid_mid + the MLP output).
Here every patch is written where the stream reads it:
- hook_embed, hook_pos_embed (learned positions only), blocks.i.hook_resid_pre,
  blocks.i.hook_attn_out, blocks.i.hook_mlp_out, blocks.i.hook_resid_post: the residual add (or
  the next block) reads the hook's output itself, so replacing it is faithful;
- blocks.i.hook_resid_mid: written through the attention output, which the residual add reads:
  attn_out' = attn_out + (V - resid_mid) with resid_mid = resid_pre + attn_out, so the stream
  after the add is V (to float rounding) and the MLP reads norm(V); positions not patched get
  attn_out bit for bit.
Anything else (attention internals, norms, hook_pos_embed under rotary positions, where it
never fires) is refused with the list of faithful hooks (`check_patch_hooks`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.capture.hooks import patching_hooks
from workbench.core.errors import ConfigError, unknown_name

Replace = Callable[[Tensor, Any], Tensor]
"""A TransformerLens forward hook: (activation, hook) -> the activation to use instead."""

DIRECT = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post")
"""Per-block hooks whose output is what the stream reads next."""

_MID = re.compile(r"^blocks\.(\d+)\.hook_resid_mid$")


def learned_positions(model: TransformerBridge) -> bool:
    """Whether positions enter the stream as an added embedding (so hook_pos_embed fires)."""
    return getattr(model.cfg, "positional_embedding_type", "standard") == "standard"


def faithful_hooks(model: TransformerBridge) -> list[str]:
    """Every hook a patch of which is what flows on in `model`, in forward order."""
    n = int(model.cfg.n_layers)
    hooks = ["hook_embed", *(["hook_pos_embed"] if learned_positions(model) else [])]
    for i in range(n):
        hooks.append(f"blocks.{i}.hook_resid_pre")
        for kind in ("hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"):
            hooks.append(f"blocks.{i}.{kind}")
    return [h for h in hooks if h in model.hook_dict]


def default_patch_hooks(model: TransformerBridge) -> list[str]:
    """`patching_hooks` (the embeddings and every write into the stream) that `model` can patch
    faithfully: without hook_pos_embed under rotary positions."""
    ok = set(faithful_hooks(model))
    return [h for h in patching_hooks(int(model.cfg.n_layers)) if h in ok]


def check_patch_hooks(model: TransformerBridge, hooks: Sequence[str]) -> None:
    """Refuse hooks whose patch would not be what flows on, listing the faithful ones."""
    ok = faithful_hooks(model)
    for h in hooks:
        if h not in model.hook_dict:
            raise unknown_name("hook", h, ok, fix="Use classic TransformerLens hook names.")
    bad = [h for h in hooks if h not in ok]
    if not bad:
        return
    why = ""
    if bad[0] == "hook_pos_embed" and not learned_positions(model):
        why = f" (positions are {model.cfg.positional_embedding_type}: hook_pos_embed never fires)"
    raise ConfigError(
        f"Activation patching cannot patch {bad[0]!r} faithfully{why}: the patched value would not be what "
        f"flows on through the residual stream. Patchable hooks: hook_embed"
        f"{', hook_pos_embed' if learned_positions(model) else ''}, and per block i: blocks.i.hook_resid_pre, "
        f"hook_attn_out, hook_resid_mid, hook_mlp_out, hook_resid_post (i < {int(model.cfg.n_layers)})."
    )


def patch_hooks(hook: str, replace: Replace) -> list[tuple[str, Replace]]:
    """Forward hooks that make `replace`'s output at `hook` the value that flows on (see module doc)."""
    m = _MID.match(hook)
    if m is None:
        return [(hook, replace)]
    i = int(m.group(1))
    seen: dict[str, Tensor] = {}

    def keep_pre(act: Tensor, hook: Any) -> Tensor:
        seen["pre"] = act
        return act

    def write_mid(attn_out: Tensor, hook: Any) -> Tensor:
        mid = seen.pop("pre") + attn_out
        return attn_out + (replace(mid, hook) - mid)

    return [(f"blocks.{i}.hook_resid_pre", keep_pre), (f"blocks.{i}.hook_attn_out", write_mid)]
