"""The `where` parser: hook and parameter-group names of native and Hugging Face models -> places."""

import pytest
import torch

from workbench.results.places import EMBED, FINAL, Place, place_of


@pytest.mark.parametrize("where, place", [
    ("blocks.1.hook_mlp_out", Place(1, "mlp")),
    ("blocks.1.mlp.out", Place(1, "mlp")),
    ("blocks.1.mlp.W_out", Place(1, "mlp")),
    ("blocks.0.hook_attn_out", Place(0, "attn")),
    ("blocks.0.attn.hook_z", Place(0, "attn")),
    ("blocks.3.attn.q", Place(3, "attn")),
    ("blocks.12.hook_resid_post", Place(12, "resid")),
    ("blocks.0.ln1", Place(0, "norm")),
    ("blocks.0.ln2.hook_normalized", Place(0, "norm")),
    ("blocks.2.mlp.hook_out", Place(2, "mlp")),  # the bridge's structural names
    ("blocks.2.hook_out", Place(2, "resid")),
    ("layer 4", Place(4, "block")),
    ("L1 mlp_out", Place(1, "mlp")),
    ("blocks.0.ln1 + blocks.0.attn.q + blocks.0.mlp.out", Place(0, "block")),
    ("hook_embed", Place(EMBED, "embed")),
    ("hook_pos_embed", Place(EMBED, "embed")),
    ("embed + pos_embed", Place(EMBED, "embed")),
    ("embed.hook_out", Place(EMBED, "embed")),
    ("ln_final", Place(FINAL, "norm")),
    ("ln_final.hook_normalized", Place(FINAL, "norm")),
    ("ln_final + unembed", Place(FINAL, "unembed")),
    ("model.layers.1.mlp.down_proj.weight", Place(1, "mlp")),  # raw Hugging Face module paths
    ("model.layers.0.self_attn.q_proj", Place(0, "attn")),
    ("lm_head", Place(FINAL, "unembed")),
])
def test_places_of_hooks_and_groups(where, place):
    assert place_of(where) == place


@pytest.mark.parametrize("where", ["whole model", "student (retrained)", "drop 10%", "embed + blocks.0.mlp.out", "", "?"])
def test_rows_about_no_single_place(where):
    assert place_of(where) is None


def test_labels_read_in_depth_order():
    places = [place_of(w) for w in ("ln_final", "blocks.10.hook_mlp_out", "hook_embed", "blocks.2.attn.o")]
    assert [p.label for p in sorted(places)] == ["embed", "L2 attn", "L10 mlp", "final norm"]


def test_every_group_and_hook_of_a_qwen2_bridge_has_its_place(tmp_path):
    """The names a Hugging Face Qwen2 model gets through the bridge: parameter groups and the hooks
    the analyses read all map to a place at the right depth."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from workbench.capture.hooks import patching_hooks, resolve_hooks
    from workbench.core.lineage import Lineage

    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                 intermediate_size=64, vocab_size=100, max_position_embeddings=64)
                     ).save_pretrained(tmp_path / "qwen2")
    lin = Lineage.from_hf_dirs({"base": str(tmp_path / "qwen2")})
    groups = lin.groups()
    assert {g.name for g in groups} >= {"embed", "blocks.1.mlp.gate", "blocks.1.mlp.out", "blocks.0.attn.q", "ln_final"}
    for g in groups:
        p = place_of(g.name)
        assert p is not None, g.name
        assert p.layer == (g.layer if g.layer is not None else p.layer), g.name
        if g.layer is None:
            assert p.layer in (EMBED, FINAL), g.name
    assert place_of("blocks.1.mlp.gate") == Place(1, "mlp") and place_of("blocks.0.attn.k") == Place(0, "attn")
    hooks, _ = resolve_hooks(lin["base"], patching_hooks(lin.cfg.n_layers))
    for h in hooks:
        p = place_of(h)
        assert p is not None, h
        assert p.layer == (int(h.split(".")[1]) if h.startswith("blocks.") else EMBED), h
