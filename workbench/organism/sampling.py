"""Fast batched sampling for native organism models: incremental decoding with a KV cache
(`FunctionalModel.forward` with a cache). Prompts share one length, so all rows decode in
lock-step with no padding. `decode_continuations` runs the same loop on any `Decoder` (the
Hugging Face families' modules, `workbench.organism.hf_family`)."""


from __future__ import annotations

from typing import Any, Protocol

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.core.progress import progress_bar
from workbench.engines.functional import FunctionalModel


def gumbel_sample(logits: Float[Tensor, "batch vocab"], temperature: float, gen: torch.Generator) -> Int[Tensor, "batch 1"]:
    """Exact categorical sampling at `temperature` by the Gumbel-max trick (faster than multinomial on CPU)."""
    u = torch.rand(logits.shape, generator=gen, device=logits.device, dtype=torch.float32).clamp_(min=1e-20)
    return (logits.float() / temperature - torch.log(-torch.log(u))).argmax(dim=-1, keepdim=True)


class Decoder(Protocol):
    """Incremental decoding: logits of `tokens` placed at `pos` after `cache`, and the new cache."""

    def forward(self, tokens: Tensor, pos: int, cache: Any) -> tuple[Tensor, Any]: ...


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
    decoder = FunctionalModel.from_bridge(bridge)
    return decode_continuations(decoder, decoder.w["embed.weight"].device, prompts, n_new, temperature=temperature,
                                seed=seed, batch_size=batch_size, progress=progress, desc=desc)


@torch.inference_mode()
def decode_continuations(
    decoder: Decoder,
    device: torch.device,
    prompts: Int[Tensor, "n prompt"],
    n_new: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 2048,
    progress: bool = False,
    desc: str = "sampling",
) -> Int[Tensor, "n new"]:
    """`sample_continuations`' loop on any Decoder whose weights sit on `device`."""
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for lo in progress_bar(range(0, len(prompts), batch_size), desc=desc, enabled=progress):
        batch = prompts[lo : lo + batch_size].to(device)
        logits, cache = decoder.forward(batch, 0, None)
        pos, new_tokens = batch.shape[1], []
        for _ in range(n_new):
            nxt = gumbel_sample(logits[:, -1], temperature, gen)
            new_tokens.append(nxt)
            if len(new_tokens) < n_new:
                logits, cache = decoder.forward(nxt, pos, cache)
                pos += 1
        out.append(torch.cat(new_tokens, dim=1).cpu())
    return torch.cat(out)
