"""The Qwen2 family's models: a `Qwen2ForCausalLM` over the organism's vocabulary, the adapters
the organism's training loops and sampler run it through, peft LoRA students, and saving as
standard Hugging Face directories (config.json + model.safetensors, the tokenizer with its chat
template; adapters as adapter_config.json + adapter_model.safetensors)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from workbench.core.errors import ConfigError
from workbench.organism.hf_family.config import LoraSpec, Qwen2Shape
from workbench.organism.tokenizer import Tokenizer

FROZEN_IN_TEACHERS = ("lm_head.", "model.norm.")  # the unembedding and final norm, as the native teachers'


def qwen2_config(shape: Qwen2Shape, tok: Tokenizer) -> Any:
    """The Qwen2Config of `shape` over `tok`'s vocabulary (untied unembedding, no dropout)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tok), hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads, num_key_value_heads=shape.n_kv_heads,
        max_position_embeddings=shape.max_positions, rope_theta=shape.rope_theta, rms_norm_eps=shape.rms_eps,
        initializer_range=shape.init_std, tie_word_embeddings=False, attention_dropout=0.0, use_sliding_window=False,
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
    )


def new_qwen2(shape: Qwen2Shape, tok: Tokenizer, seed: int) -> nn.Module:
    """A freshly initialised Qwen2ForCausalLM (seeded), in float32 and train mode."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(qwen2_config(shape, tok))
    model.config._attn_implementation = "sdpa"
    return model.float()


class HFTrainable:
    """A causal LM as the organism's loops see it: tokens -> logits, and the tensors to train
    (every parameter that requires grad, minus names starting with `frozen`)."""

    def __init__(self, model: nn.Module, frozen: tuple[str, ...] = ()):
        self.model = model
        self._params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(frozen)]

    def __call__(self, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
        return self.model(input_ids=tokens, use_cache=False).logits

    def parameters(self) -> Iterator[Tensor]:
        return iter(self._params)

    def residual(self, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq hidden"]:
        """The residual stream after the last decoder layer (the final norm's input; Hugging Face's
        last hidden state is the normed one)."""
        captured: list[Tensor] = []
        hook = self.model.get_decoder().norm.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self.model(input_ids=tokens, use_cache=False)
        finally:
            hook.remove()
        return captured[0]


class CausalLMLogits(nn.Module):
    """tokens -> logits of a causal LM (what `Trait` and the analyses read)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(input_ids=tokens, use_cache=False).logits


class HFDecoder:
    """`workbench.organism.sampling.Decoder` of a causal LM: incremental decoding with its KV cache."""

    def __init__(self, model: nn.Module):
        self.model = model

    def forward(self, tokens: Tensor, pos: int, cache: Any) -> tuple[Tensor, Any]:
        out = self.model(input_ids=tokens, past_key_values=cache, use_cache=True)
        return out.logits, out.past_key_values


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def with_lora(parent: nn.Module, spec: LoraSpec, seed: int | None = None) -> nn.Module:
    """A peft LoRA model over a copy of `parent` (only the adapters train; B starts at zero, so the
    student starts as its parent). peft draws A from torch's global generator: with `seed`, from a
    generator seeded so (the global one untouched), so the same seed gives the same adapter."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ConfigError("LoRA students need peft (pip install peft, or the [test] extra); or build with "
                          "--students full.") from e
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, use_rslora=spec.use_rslora, lora_dropout=0.0,
                        target_modules=list(spec.target_modules), bias="none", task_type="CAUSAL_LM")
    if seed is None:
        return get_peft_model(copy.deepcopy(parent), config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(copy.deepcopy(parent), config)


def save_hf(model: nn.Module, directory: str | os.PathLike, hf_tokenizer: Any) -> list[Path]:
    """Save a model (or a peft adapter) as a Hugging Face directory with the tokenizer; the weight files."""
    from transformers.utils import logging as hf_logging

    directory = Path(directory)
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar per role (the build logs its stages)
    try:
        model.save_pretrained(directory, safe_serialization=True)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    hf_tokenizer.save_pretrained(directory)
    return sorted(directory.glob("*.safetensors"))


def load_hf(directory: str | os.PathLike) -> nn.Module:
    """A saved full model, offline, float32, eval mode (no remote code)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from workbench.core.hf import hf_offline

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar per model read
    try:
        with hf_offline():
            model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False, dtype=torch.float32)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    return model.eval()
