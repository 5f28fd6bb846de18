"""Parity of the bridge's stream hooks with Hugging Face's own forward (hidden states and forward
hooks on the attention and MLP modules) for GPT-2, Qwen2 and Llama: tiny random configs written
with save_pretrained, loaded through Lineage.from_hf_dirs, within 1e-5 in float32; a diverging
hook is an error naming it."""

from __future__ import annotations

import pytest
import torch

from workbench.core.errors import ConfigError
from workbench.core.hf_parity import ATOL, ParityError, assert_hook_parity, check_hf_parity, parity_hooks
from workbench.core.lineage import Lineage

transformers = pytest.importorskip("transformers")
FAMILIES = ("gpt2", "qwen2", "llama")
TOKENS = torch.tensor([[1, 5, 9, 2, 7, 3, 11, 40], [4, 4, 8, 0, 1, 6, 99, 2]])


def tiny_hf_model(family: str) -> torch.nn.Module:
    """A 3-layer random model of `family` (grouped-query attention for Qwen2 and Llama)."""
    torch.manual_seed(0)
    if family == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=100,
                                                                    n_positions=32))
    common = dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    if family == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("parity")
    out = {}
    for family in FAMILIES:
        out[family] = str(root / family)
        tiny_hf_model(family).save_pretrained(out[family])
    return out


def _reference(path: str) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_stream_hooks_equal_hf_hidden_states_and_module_outputs(dirs, family):
    lin = Lineage.from_hf_dirs({"base": dirs[family]})
    errors = assert_hook_parity(lin["base"], _reference(dirs[family]), TOKENS)
    assert list(errors) == parity_hooks(3) and len(errors) == 15
    assert max(errors.values()) <= ATOL
    # the check through the directory gives the same verdict
    assert max(check_hf_parity(dirs[family]).values()) <= ATOL


def test_the_reference_is_real(dirs):
    """Changing HF's weights (not the bridge's) is caught at the first hook it reaches."""
    lin = Lineage.from_hf_dirs({"base": dirs["llama"]})
    ref = _reference(dirs["llama"])
    with torch.no_grad():
        ref.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    with pytest.raises(ParityError, match=r"blocks\.1\.hook_mlp_out differs from Hugging Face's \(llama\)"):
        assert_hook_parity(lin["base"], ref, TOKENS)


@pytest.mark.parametrize("family, hook", [("gpt2", "blocks.0.hook_attn_out"), ("qwen2", "blocks.2.hook_mlp_out"),
                                          ("llama", "blocks.1.hook_resid_mid")])
def test_a_diverging_hook_is_an_error_naming_it(dirs, family, hook):
    """A bridge whose hook reads wrong (here: a permanent hook adding 1e-3) fails at that hook,
    with the error size, not with wrong numbers downstream."""
    lin = Lineage.from_hf_dirs({"base": dirs[family]})
    bridge = lin["base"]
    bridge.add_hook(hook, lambda act, hook: act + 1e-3)
    try:
        with pytest.raises(ParityError) as err:
            assert_hook_parity(bridge, _reference(dirs[family]), TOKENS)
    finally:
        bridge.reset_hooks()
    msg = str(err.value)
    assert msg.startswith(f"The bridge's {hook} differs") and "by 0.001" in msg and "tolerance 1e-05" in msg


def test_refusals(dirs):
    lin = Lineage.from_hf_dirs({"base": dirs["gpt2"]})
    with pytest.raises(ConfigError, match="independent copy"):
        assert_hook_parity(lin["base"], lin["base"].original_model, TOKENS)
    bloom = transformers.BloomForCausalLM(transformers.BloomConfig(n_layer=1, hidden_size=16, n_head=2, vocab_size=100))
    with pytest.raises(ConfigError, match="model_type 'bloom'.*gpt2, llama, mistral, qwen2"):
        assert_hook_parity(lin["base"], bloom, TOKENS)
