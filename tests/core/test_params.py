"""The clean parameter key space: buffers left out, shared memory counted once, groups."""

from __future__ import annotations

import torch
from torch import nn

from workbench.core.models import boot_native
from workbench.core.params import group_of, make_groups, param_space, uncovered_parameters

CFG = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=16,
    act_fn="gelu", normalization_type="LN", seed=0,
)  # fmt: skip


def test_native_space_is_the_live_parameters():
    bridge = boot_native(CFG)
    space = param_space(bridge)
    assert "unembed.bias" not in space.params  # a zero buffer in native models
    live = {id(p) for p in bridge.parameters()}
    assert all(id(p) in live for p in space.params.values())
    assert sum(p.numel() for p in space.params.values()) == sum(p.numel() for p in bridge.parameters())
    assert space.aliases == {}
    assert all(space.actual_names[k] for k in space.params)  # every key reaches a wrapped-model name
    assert uncovered_parameters(bridge, space) == []


def test_group_of_and_canonical_order():
    assert group_of("blocks.1.attn.qkv.weight") == ("blocks.1.attn.qkv", 1, "attn.qkv")
    assert group_of("unembed.weight") == ("unembed", None, "unembed")
    keys = ["unembed.weight", "blocks.1.mlp.out.weight", "blocks.0.attn.q.bias", "custom.scale",
            "blocks.0.ln1.w", "blocks.0.attn.q.weight", "embed.weight", "ln_final.w"]  # fmt: skip
    groups = make_groups(keys)
    assert [g.name for g in groups] == [
        "embed", "blocks.0.ln1", "blocks.0.attn.q", "blocks.1.mlp.out", "custom", "ln_final", "unembed",
    ]  # fmt: skip
    assert groups[2].keys == ("blocks.0.attn.q.bias", "blocks.0.attn.q.weight")  # order of first appearance
    assert groups[2].numel({"blocks.0.attn.q.bias": torch.zeros(3), "blocks.0.attn.q.weight": torch.zeros(2, 3)}) == 9


def test_joint_and_split_views_count_once():
    """A bridge exposing a joint qkv and its split views keeps the split keys only."""
    joint = nn.Parameter(torch.randn(4, 12))
    q, k, v = (nn.Parameter(joint.data[:, i * 4 : (i + 1) * 4]) for i in range(3))
    emb = nn.Parameter(torch.randn(10, 4))

    class Fake:
        def state_dict(self, keep_vars=False):
            return {"embed.weight": emb, "blocks.0.attn.qkv.weight": joint, "blocks.0.attn.q.weight": q,
                    "blocks.0.attn.k.weight": k, "blocks.0.attn.v.weight": v, "unembed.weight": emb,
                    "unembed.bias": torch.zeros(10)}  # fmt: skip

        def parameters(self):
            return iter([emb, joint, q, k, v])

        def named_parameters(self, remove_duplicate=True):
            return iter([("wte.weight", emb), ("c_attn.weight", joint), ("q.weight", q), ("k.weight", k),
                         ("v.weight", v), ("lm_head.weight", emb)])  # fmt: skip

    space = param_space(Fake())
    assert list(space.params) == ["embed.weight"] + [f"blocks.0.attn.{x}.weight" for x in "qkv"]
    assert space.aliases["unembed.weight"] == ("embed.weight",)
    assert set(space.aliases["blocks.0.attn.qkv.weight"]) == {f"blocks.0.attn.{x}.weight" for x in "qkv"}
    assert space.actual_names["embed.weight"] == ("wte.weight", "lm_head.weight")
    assert uncovered_parameters(Fake(), space) == []
