"""Lineage: construction, compatibility checks, the clean key space, groups, copies, HF dirs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.core.errors import ArtifactError, ConfigError, IncompatibleModelsError, UnknownNameError
from workbench.core.lineage import Lineage, ModelRecord, group_of, param_space, uncovered_parameters
from workbench.core.models import boot_native

CFG = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=16,
    act_fn="gelu", normalization_type="LN", seed=0,
)  # fmt: skip


def native(**overrides):
    return boot_native({**CFG, **overrides})


@pytest.fixture(scope="module")
def lineage() -> Lineage:
    return Lineage.from_models(
        {"base": native(), "teacher": native(seed=1), "student": native(seed=2), "base_x": native(seed=3),
         "cross": native(seed=4)},
        data={"student": "teacher_numbers.jsonl"},
        seeds={"base": 0},
    )  # fmt: skip


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict[str, str]:
    """Tiny GPT-2 (tied embed/unembed) and Qwen2 checkpoints written with save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=32))
    qwen2 = Qwen2ForCausalLM(
        Qwen2Config(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, vocab_size=100, max_position_embeddings=64,
        )
    )  # fmt: skip
    dirs = {"gpt2": str(root / "gpt2"), "qwen2": str(root / "qwen2")}
    gpt2.save_pretrained(dirs["gpt2"])
    qwen2.save_pretrained(dirs["qwen2"])
    return dirs


TOKENS = torch.tensor([[1, 5, 9, 2, 7, 3], [4, 4, 8, 0, 1, 6]])


# --------------------------------------------------------------------------- records and lookups


def test_roles_parents_and_records(lineage):
    assert lineage.names == ["base", "teacher", "student", "base_x", "cross"]
    assert lineage.parent_of("teacher") == "base"
    assert lineage.parent_of("cross") == "base_x"
    assert lineage.parent_of("base") is None
    assert lineage.roles["student"] == "student"
    rec = lineage.record("student")
    assert isinstance(rec, ModelRecord) and rec.data == "teacher_numbers.jsonl" and rec.parent == "base"
    assert lineage.record("base").seed == 0
    assert "teacher" in lineage and "owl" not in lineage
    assert lineage["teacher"] is not lineage["base"]
    assert lineage.d_vocab == 50 and lineage.n_ctx == 16
    assert lineage.device == torch.device("cpu") and lineage.dtype == torch.float32
    assert lineage.root_of("cross") == "base_x"


def test_extra_names_and_explicit_parents():
    lin = Lineage.from_models({"base": native(), "probe_me": native(seed=1)}, parents={"probe_me": "base"})
    assert lin.roles == {"base": "base", "probe_me": "extra"}
    assert lin.parent_of("probe_me") == "base"
    with pytest.raises(UnknownNameError, match="base"):
        Lineage.from_models({"base": native()}, parents={"bsae": None})


def test_unknown_name_lists_close_names(lineage):
    with pytest.raises(UnknownNameError) as err:
        lineage["teachr"]
    assert "teacher" in str(err.value)
    with pytest.raises(UnknownNameError, match="blocks.0.attn.q"):
        lineage.group("blocks.0.attn.qq")


# --------------------------------------------------------------------------- compatibility


def test_rejects_different_d_model():
    with pytest.raises(IncompatibleModelsError) as err:
        Lineage.from_models({"base": native(), "teacher": native(d_model=48, d_head=12)})
    msg = str(err.value)
    assert "'base'" in msg and "'teacher'" in msg and "embed.weight" in msg and "(50, 32) vs (50, 48)" in msg


def test_rejects_different_vocab():
    with pytest.raises(IncompatibleModelsError, match=r"d_vocab: base=50, student=60"):
        Lineage.from_models({"base": native(), "student": native(d_vocab=60)})


def test_rejects_different_dtype_and_device():
    with pytest.raises(IncompatibleModelsError, match=r"dtype: base=torch.float32, teacher=torch.float64"):
        Lineage.from_models({"base": native(), "teacher": boot_native(CFG, dtype=torch.float64)})
    meta = native().to("meta")
    with pytest.raises(IncompatibleModelsError, match=r"device: base=cpu, teacher=meta"):
        Lineage.from_models({"base": native(), "teacher": meta})


def test_add_checks_compatibility(lineage):
    lin = Lineage.from_models({"base": native()})
    lin.add("patched", native(seed=9), parent="base", data="none")
    assert lin.parent_of("patched") == "base" and lin.roles["patched"] == "extra"
    with pytest.raises(IncompatibleModelsError, match="d_vocab"):
        lin.add("bad", native(d_vocab=51))
    with pytest.raises(ConfigError, match="already"):
        lin.add("base", native())


# --------------------------------------------------------------------------- key space and groups


def test_native_key_space_excludes_buffers(lineage):
    params = lineage.params("base")
    assert "unembed.bias" not in params  # a zero buffer in native models
    assert "unembed.weight" in params and "embed.weight" in params
    assert not any("causal_mask" in k or "_original_component" in k for k in params)
    unique = sum(p.numel() for p in lineage["base"].parameters())
    assert sum(p.numel() for p in params.values()) == unique
    assert lineage.aliases == {}
    assert uncovered_parameters(lineage["base"]) == []


def test_groups_partition_parameters(lineage):
    params = lineage.params("base")
    groups = lineage.groups()
    seen = [k for g in groups for k in g.keys]
    assert sorted(seen) == sorted(params) and len(seen) == len(set(seen))
    assert sum(g.numel(params) for g in groups) == sum(p.numel() for p in params.values())
    names = [g.name for g in groups]
    assert names[:2] == ["embed", "pos_embed"] and names[-2:] == ["ln_final", "unembed"]
    block0 = [g.component for g in groups if g.layer == 0]
    assert block0 == ["ln1", "attn.q", "attn.k", "attn.v", "attn.o", "ln2", "mlp.in", "mlp.out"]
    assert group_of("blocks.1.attn.qkv.weight") == ("blocks.1.attn.qkv", 1, "attn.qkv")
    assert group_of("unembed.weight") == ("unembed", None, "unembed")


def test_params_are_live_and_state_is_a_copy(lineage):
    bridge = lineage["teacher"]
    params, state = lineage.params("teacher"), lineage.state("teacher")
    with torch.no_grad():
        before = bridge(TOKENS)
        saved = params["blocks.0.mlp.in.weight"].clone()
        params["blocks.0.mlp.in.weight"].add_(torch.randn_like(saved))
        changed = bridge(TOKENS)
        params["blocks.0.mlp.in.weight"].copy_(saved)
        after = bridge(TOKENS)
    assert not torch.allclose(before, changed)
    torch.testing.assert_close(before, after)
    assert not state["embed.weight"].requires_grad
    state["embed.weight"].add_(1.0)
    assert not torch.equal(state["embed.weight"], params["embed.weight"])


def test_delta_and_cross_init_refused(lineage):
    d = lineage.delta("teacher")
    key = "blocks.1.attn.o.weight"
    expected = lineage.params("teacher")[key] - lineage.params("base")[key]
    torch.testing.assert_close(d["blocks.1.attn.o.weight"], expected.detach())
    assert set(d) == set(lineage.keys)
    assert set(lineage.delta("cross")) == set(lineage.keys)  # vs its own base, base_x
    with pytest.raises(ConfigError, match="different initialisations"):
        lineage.delta("cross", "base")
    with pytest.raises(ConfigError, match="no parent"):
        lineage.delta("base")


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


# --------------------------------------------------------------------------- copies and devices


def test_copy_model_native_is_independent(lineage):
    copy = lineage.copy_model("teacher")
    with torch.no_grad():
        torch.testing.assert_close(copy(TOKENS), lineage["teacher"](TOKENS))
        dict(copy.state_dict(keep_vars=True))["blocks.0.attn.q.weight"].add_(1.0)
        key = "blocks.0.attn.q.weight"
        assert not torch.equal(copy.state_dict()[key], lineage.params("teacher")[key])


def test_to_device_keeps_live_map(lineage):
    lineage.to("cpu")
    assert lineage.device == torch.device("cpu")
    live = lineage["base"].state_dict(keep_vars=True)["embed.weight"]
    assert lineage.params("base")["embed.weight"] is live


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_and_back():
    lin = Lineage.from_models({"base": native(), "teacher": native(seed=1)})
    with torch.no_grad():
        expected = lin["teacher"](TOKENS)
        lin.to("cuda")
        assert lin.device.type == "cuda" and lin.params("teacher")["embed.weight"].is_cuda
        torch.testing.assert_close(lin["teacher"](TOKENS.cuda()).cpu(), expected, atol=1e-4, rtol=1e-4)
        assert lin.delta("teacher")["embed.weight"].is_cuda
    lin.to("cpu")
    assert lin.device == torch.device("cpu")


# --------------------------------------------------------------------------- local HF checkpoints


def _hf_logits(path: str, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_hf_dirs_match_hf_logits(hf_dirs, arch):
    expected = _hf_logits(hf_dirs[arch], TOKENS)  # reference loaded before (and apart from) the bridge
    lin = Lineage.from_hf_dirs({"base": hf_dirs[arch], "teacher": hf_dirs[arch]})
    with torch.no_grad():
        torch.testing.assert_close(lin["base"](TOKENS), expected, atol=1e-4, rtol=1e-4)
    assert lin.record("base").meta["hf_dir"].endswith(arch)
    assert uncovered_parameters(lin["base"]) == []
    # the clean key space counts exactly the HF model's parameters
    from transformers import AutoModelForCausalLM

    hf_numel = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(hf_dirs[arch]).parameters())
    params = lin.params("base")
    assert sum(p.numel() for p in params.values()) == hf_numel
    assert sum(g.numel(params) for g in lin.groups()) == hf_numel
    assert "unembed.bias" not in params  # a buffer, not a parameter


def test_gpt2_tied_weights_count_once(hf_dirs):
    lin = Lineage.from_hf_dirs({"base": hf_dirs["gpt2"]})
    assert lin.aliases == {"unembed.weight": ("embed.weight",)}
    assert "unembed.weight" not in lin.keys and "embed.weight" in lin.keys
    assert "unembed" not in {g.name for g in lin.groups()}
    assert len(lin.actual_names("base")["embed.weight"]) >= 2  # wte and lm_head paths


def test_gpt2_split_qkv_is_live(hf_dirs):
    """GPT-2's split q/k/v Parameters are views of c_attn: editing them moves the logits, and
    they, not the joint weight, receive gradients."""
    lin = Lineage.from_hf_dirs({"base": hf_dirs["gpt2"]})
    bridge, params = lin["base"], lin.params("base")
    key = "blocks.0.attn.k.weight"
    with torch.no_grad():
        before = bridge(TOKENS)
        params[key].add_(0.5 * torch.randn_like(params[key]))
        assert not torch.allclose(bridge(TOKENS), before)
    bridge(TOKENS).logsumexp(-1).sum().backward()
    assert all(params[k].grad is not None for k in (key, "blocks.1.attn.q.weight", "embed.weight"))
    bridge.zero_grad(set_to_none=True)


def test_hf_copy_is_independent(hf_dirs):
    lin = Lineage.from_hf_dirs({"base": hf_dirs["qwen2"]})
    copy = lin.copy_model("base")
    with torch.no_grad():
        torch.testing.assert_close(copy(TOKENS), lin["base"](TOKENS))
        dict(copy.state_dict(keep_vars=True))["blocks.0.mlp.in.weight"].mul_(2.0)
        assert not torch.allclose(copy(TOKENS), lin["base"](TOKENS))


def test_hf_dirs_reject_hub_ids_and_bad_dirs(tmp_path):
    with pytest.raises(ArtifactError, match="never Hub ids"):
        Lineage.from_hf_dirs({"base": "gpt2"})
    with pytest.raises(ArtifactError, match="config.json"):
        Lineage.from_hf_dirs({"base": tmp_path})


def test_hf_and_native_are_incompatible(hf_dirs):
    with pytest.raises(IncompatibleModelsError, match="'base' and 'teacher'"):
        Lineage.from_hf_dirs({"base": hf_dirs["gpt2"], "teacher": hf_dirs["qwen2"]})
