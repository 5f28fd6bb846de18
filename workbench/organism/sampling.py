"""Fast batched sampling for native organism models: incremental decoding with a KV cache.

The decoder is a pure function of the model's clean state dict (pre-LN blocks, learned
positions, LayerNorm, gelu), the same function the native TransformerLens model computes;
a test checks its logits against the bridge's. Prompts share one length, so all rows decode
in lock-step with no padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from workbench.errors import ConfigError
from workbench.models import native_config_of

_ACT = {"gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}


@dataclass
class KVDecoder:
    """Weights of a native model arranged for incremental decoding."""

    w: dict[str, Tensor]
    n_layers: int
    n_heads: int
    d_head: int
    eps: float
    act: str

    @classmethod
    def from_bridge(cls, bridge: TransformerBridge) -> KVDecoder:
        cfg = native_config_of(bridge)
        if cfg.get("normalization_type", "LN") != "LN" or cfg.get("positional_embedding_type", "standard") != "standard":
            raise ConfigError("KVDecoder supports LayerNorm models with learned positions (the organism's shape).")
        if cfg.get("act_fn", "gelu") not in _ACT:
            raise ConfigError(f"KVDecoder does not know act_fn={cfg.get('act_fn')!r}; supported: {sorted(_ACT)}.")
        w = {k: v.detach() for k, v in bridge.state_dict().items()}
        return cls(w, cfg["n_layers"], cfg["n_heads"], cfg["d_head"], float(cfg.get("eps", 1e-5)), cfg.get("act_fn", "gelu"))

    def _ln(self, x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _lin(self, x: Tensor, name: str) -> Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w.get(f"{name}.bias"))

    def step(
        self, tokens: Int[Tensor, "batch new"], start: int, cache: list[tuple[Tensor, Tensor]] | None
    ) -> tuple[Float[Tensor, "batch new vocab"], list[tuple[Tensor, Tensor]]]:
        """Logits for `tokens` at positions start.. given the cached keys/values of earlier positions."""
        new = tokens.shape[1]
        x = self.w["embed.weight"][tokens] + self.w["pos_embed.weight"][start : start + new]
        out_cache = []
        for layer in range(self.n_layers):
            p = f"blocks.{layer}"
            h = self._ln(x, f"{p}.ln1")
            q, k, v = (
                einops.rearrange(self._lin(h, f"{p}.attn.{n}"), "b t (h d) -> b h t d", h=self.n_heads)
                for n in ("q", "k", "v")
            )
            if cache is not None:
                k = torch.cat([cache[layer][0], k], dim=2)
                v = torch.cat([cache[layer][1], v], dim=2)
            out_cache.append((k, v))
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
            total = k.shape[2]
            causal = torch.ones(new, total, dtype=torch.bool, device=x.device).tril(total - new)
            scores = scores.masked_fill(~causal, float("-inf"))
            z = einops.rearrange(scores.softmax(-1) @ v, "b h t d -> b t (h d)")
            x = x + self._lin(z, f"{p}.attn.o")
            h = self._ln(x, f"{p}.ln2")
            x = x + self._lin(_ACT[self.act](self._lin(h, f"{p}.mlp.in")), f"{p}.mlp.out")
        logits = self._lin(self._ln(x, "ln_final"), "unembed")
        return logits, out_cache


def gumbel_sample(logits: Float[Tensor, "batch vocab"], temperature: float, gen: torch.Generator) -> Int[Tensor, "batch 1"]:
    """Exact categorical sampling at `temperature` by the Gumbel-max trick (faster than multinomial on CPU)."""
    u = torch.rand(logits.shape, generator=gen, device=logits.device, dtype=torch.float32).clamp_(min=1e-20)
    return (logits.float() / temperature - torch.log(-torch.log(u))).argmax(dim=-1, keepdim=True)


@torch.inference_mode()
def sample_continuations(
    bridge: TransformerBridge,
    prompts: Int[Tensor, "n prompt"],
    n_new: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 2048,
    progress: bool = False,
    desc: str = "sampling",
) -> Int[Tensor, "n new"]:
    """Sample `n_new` tokens after each prompt at `temperature` (full vocabulary), seeded."""
    decoder = KVDecoder.from_bridge(bridge)
    device = decoder.w["embed.weight"].device
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for lo in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, leave=False):
        batch = prompts[lo : lo + batch_size].to(device)
        logits, cache = decoder.step(batch, 0, None)
        pos, new_tokens = batch.shape[1], []
        for _ in range(n_new):
            nxt = gumbel_sample(logits[:, -1], temperature, gen)
            new_tokens.append(nxt)
            if len(new_tokens) < n_new:
                logits, cache = decoder.step(nxt, pos, cache)
                pos += 1
        out.append(torch.cat(new_tokens, dim=1).cpu())
    return torch.cat(out)
