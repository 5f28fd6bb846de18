"""Lineage: construction, compatibility checks, its key space and groups, copies, devices.

The key space itself is tested in test_params.py, local HF directories in test_hf.py."""

from __future__ import annotations

import pytest
import torch

from workbench.core.errors import ConfigError, IncompatibleModelsError, UnknownNameError
from workbench.core.lineage import Lineage, ModelRecord
from workbench.core.models import boot_native
from workbench.core.params import group_of, uncovered_parameters

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
