"""Parity of the bridge's stream hooks with Hugging Face's own forward, per family.

TransformerLens 4.x has open reports of bridge activations that diverge from HF on some
families (wrong `hook_attn_out`/`hook_mlp_out` on BLOOM, OLMo 2/3, Granite), so the hooks the
workbench reads (`hook_resid_pre/mid/post`, `hook_attn_out`, `hook_mlp_out` of every block) are
compared with an independent HF model loaded from the same directory:
- resid_pre[i] = HF hidden_states[i] (`output_hidden_states`; hidden_states[0] is the embeddings);
- attn_out[i], mlp_out[i] = the outputs of HF's attention and MLP modules (torch forward hooks);
- resid_mid[i] = hidden_states[i] + attn_out[i] (the residual add HF's decoder layer does);
- resid_post[i] = the decoder layer's output. The last block's resid_post is *before* the final
  norm; HF's last hidden state is after it, so it is compared with the layer output, never with
  hidden_states[-1].

Choice: an explicit check (`check_hf_parity(dir)`, `assert_hook_parity`), run by the tests for
every supported family (GPT-2, Qwen2, Llama, tiny random configs), not at every boot: it needs a
second full copy of the model and two forwards (at 7B, +30 GB in float32), which would double
the cost of loading every role. Run it once when you first point the workbench at a new family
or transformers/TransformerLens version; a divergence raises `ParityError` naming the first
diverging hook and its error instead of letting analyses read wrong numbers.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from workbench.core.errors import ConfigError, WorkbenchError

FAMILIES: dict[str, tuple[str, str, str]] = {
    "gpt2": ("transformer.h", "attn", "mlp"),
    "qwen2": ("model.layers", "self_attn", "mlp"),
    "llama": ("model.layers", "self_attn", "mlp"),
    "mistral": ("model.layers", "self_attn", "mlp"),
}
"""HF `model_type` -> (decoder layers' path, attention module, MLP module) inside each layer.
Only families whose layer is `h = h + attn(norm(h)); h = h + mlp(norm(h))` belong here."""

KINDS = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
"""The per-block hooks compared, in forward order."""

ATOL = 1e-5
"""Largest max-abs error accepted in float32."""


class ParityError(WorkbenchError, ValueError):
    """The bridge's activations at some hook differ from Hugging Face's own forward."""


def parity_hooks(n_layers: int) -> list[str]:
    """`blocks.{i}.{kind}` for every block and kind in KINDS, in forward order."""
    return [f"blocks.{i}.{k}" for i in range(n_layers) for k in KINDS]


def _family(hf_model: nn.Module) -> tuple[str, str, str]:
    model_type = getattr(getattr(hf_model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise ConfigError(
            f"No parity reference for model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}. "
            "Add the family's layer, attention and MLP module names to workbench.core.hf_parity.FAMILIES "
            "(only for sequential pre-norm blocks)."
        )
    return FAMILIES[model_type]


def _first(out: Any) -> Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.inference_mode()
def hf_stream(hf_model: nn.Module, tokens: Int[Tensor, "batch seq"]) -> dict[str, Tensor]:
    """Hugging Face's own values of `parity_hooks` on `tokens` (see the module docstring)."""
    layers_path, attn_name, mlp_name = _family(hf_model)
    layers = hf_model.get_submodule(layers_path)
    outs: dict[str, Tensor] = {}
    handles = []
    for i, layer in enumerate(layers):
        for key, module in ((f"attn{i}", getattr(layer, attn_name)), (f"mlp{i}", getattr(layer, mlp_name)),
                            (f"layer{i}", layer)):
            handles.append(module.register_forward_hook(
                lambda _m, _inp, out, key=key: outs.__setitem__(key, _first(out).detach().clone())))
    try:
        hidden = hf_model(tokens, output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    ref = {}
    for i in range(len(layers)):
        ref[f"blocks.{i}.hook_resid_pre"] = hidden[i]
        ref[f"blocks.{i}.hook_attn_out"] = outs[f"attn{i}"]
        ref[f"blocks.{i}.hook_resid_mid"] = hidden[i] + outs[f"attn{i}"]
        ref[f"blocks.{i}.hook_mlp_out"] = outs[f"mlp{i}"]
        ref[f"blocks.{i}.hook_resid_post"] = outs[f"layer{i}"]  # before the final norm, unlike hidden[-1]
    return ref


@torch.inference_mode()
def check_hook_parity(bridge: TransformerBridge, hf_model: nn.Module,
                      tokens: Int[Tensor, "batch seq"]) -> dict[str, float]:
    """Max abs error between the bridge's stream hooks and HF's own forward, per hook (forward order).

    `hf_model` must be an independent HF model with the same weights (the bridge wraps its own
    in place, so it cannot be its own reference), e.g. `AutoModelForCausalLM.from_pretrained(dir)`.
    """
    if hf_model is getattr(bridge, "original_model", None):
        raise ConfigError("hf_model is the model the bridge wraps; load an independent copy from the same "
                          "directory (AutoModelForCausalLM.from_pretrained(dir, attn_implementation='eager')).")
    ref = hf_stream(hf_model.eval(), tokens.to(next(hf_model.parameters()).device))
    hooks = parity_hooks(int(bridge.cfg.n_layers))
    missing = [h for h in hooks if h not in bridge.hook_dict]
    if missing:
        raise ParityError(f"The bridge has no hook {missing[0]!r}, so its stream cannot be compared with HF's.")
    wanted = set(hooks)
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in wanted)
    return {h: float((cache[h].float().cpu() - ref[h].float().cpu()).abs().max()) for h in hooks}


def assert_hook_parity(bridge: TransformerBridge, hf_model: nn.Module, tokens: Int[Tensor, "batch seq"],
                       atol: float = ATOL) -> dict[str, float]:
    """`check_hook_parity`, raising `ParityError` naming the first diverging hook (forward order)."""
    errors = check_hook_parity(bridge, hf_model, tokens)
    bad = {h: e for h, e in errors.items() if not e <= atol}
    if bad:
        first = next(iter(bad))
        family = getattr(getattr(hf_model, "config", None), "model_type", "?")
        raise ParityError(
            f"The bridge's {first} differs from Hugging Face's ({family}) by {bad[first]:.3g} (max abs, "
            f"tolerance {atol:g}); {len(bad)} of {len(errors)} hooks diverge: {', '.join(bad)}. Analyses "
            "reading these hooks would report wrong numbers: use another transformer-lens version or family."
        )
    return errors


def check_hf_parity(path: str | os.PathLike, tokens: Int[Tensor, "batch seq"] | None = None, *,
                    atol: float = ATOL, trust_remote_code: bool = False) -> dict[str, float]:
    """Boot the local HF directory `path` as a bridge and as a plain HF model (float32, CPU,
    offline) and `assert_hook_parity` on `tokens` (default: 2 x 16 seeded random ids)."""
    from transformers import AutoModelForCausalLM

    from workbench.core.hf import boot_hf_dir, check_hf_dir, hf_offline

    p = check_hf_dir(str(path), path)
    bridge = boot_hf_dir(p, device="cpu", dtype=torch.float32, trust_remote_code=trust_remote_code)
    with hf_offline():
        hf_model = AutoModelForCausalLM.from_pretrained(str(p), attn_implementation="eager", dtype=torch.float32,
                                                        local_files_only=True, trust_remote_code=trust_remote_code)
    if tokens is None:
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, int(bridge.cfg.d_vocab), (2, min(16, int(bridge.cfg.n_ctx))), generator=gen)
    return assert_hook_parity(bridge, hf_model, tokens, atol=atol)
