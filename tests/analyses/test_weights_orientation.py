"""The weights section's output/input subspace overlaps mean the same on GPT-2's Conv1D weights
(stored [in, out]) as on nn.Linear ones (stored [out, in]): a student sharing the teacher's
output direction but not its input direction overlaps 1 on the output side only."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.weights import WeightConfig, weight_deltas
from workbench.core.lineage import Lineage

transformers = pytest.importorskip("transformers")

MODULE = {"gpt2": "transformer.h.0.mlp.c_proj", "qwen2": "model.layers.0.mlp.down_proj"}


def _config(family: str):
    if family == "gpt2":
        return transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16)
    return transformers.Qwen2Config(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
                                    intermediate_size=48, vocab_size=32, max_position_embeddings=16)


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_output_side_is_the_output_side(family, tmp_path):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(_config(family))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    module = model.get_submodule(MODULE[family])
    conv1d = type(module).__name__ == "Conv1D"
    d_out, d_in = (module.weight.shape[1], module.weight.shape[0]) if conv1d else module.weight.shape
    gen = torch.Generator().manual_seed(1)
    u, v, v2 = torch.randn(d_out, generator=gen), torch.randn(d_in, generator=gen), torch.randn(d_in, generator=gen)
    dirs = {}
    for role, change in (("base", None), ("teacher", torch.outer(u, v)), ("student", torch.outer(u, v2))):
        state = dict(base)
        if change is not None:
            key = MODULE[family] + ".weight"
            state[key] = state[key] + (change.T if conv1d else change)
        model.load_state_dict(state)
        model.save_pretrained(tmp_path / role)
        dirs[role] = str(tmp_path / role)
    lin = Lineage.from_hf_dirs(dirs)
    assert ("blocks.0.mlp.out.weight" in lin.space("base").stored_in_out) == conv1d
    assert not any(".attn.q." in k for k in lin.space("base").stored_in_out)  # the bridge's split q/k/v are [out, in]
    row = next(r for r in weight_deltas(lin, WeightConfig(models=("student",), top_k=1)).rows
               if r["group"] == "blocks.0.mlp.out")
    assert row["overlap_out"] == pytest.approx(1.0, abs=1e-6)
    assert row["overlap_in"] < 0.5
    assert row["chance_out"] == pytest.approx(1 / d_out) and row["chance_in"] == pytest.approx(1 / d_in)
