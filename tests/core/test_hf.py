"""Offline loading of local Hugging Face checkpoint directories (tiny GPT-2 and Qwen2 written
with save_pretrained): parity with HF's own logits, tied and split weights, copies, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from workbench.core.errors import ArtifactError, IncompatibleModelsError
from workbench.core.hf import boot_hf_dirs, check_hf_dir, hf_offline
from workbench.core.lineage import Lineage
from workbench.core.params import uncovered_parameters

TOKENS = torch.tensor([[1, 5, 9, 2, 7, 3], [4, 4, 8, 0, 1, 6]])


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict[str, str]:
    """Tiny GPT-2 (tied embed/unembed), Qwen2 and Llama checkpoints written with save_pretrained
    (no tokenizer files: booting must not need one)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=32))
    qwen2 = Qwen2ForCausalLM(
        Qwen2Config(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, vocab_size=100, max_position_embeddings=64,
        )
    )  # fmt: skip
    llama = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                         intermediate_size=64, vocab_size=100, max_position_embeddings=64))
    dirs = {"gpt2": str(root / "gpt2"), "qwen2": str(root / "qwen2"), "llama": str(root / "llama")}
    gpt2.save_pretrained(dirs["gpt2"])
    qwen2.save_pretrained(dirs["qwen2"])
    llama.save_pretrained(dirs["llama"])
    return dirs


def _hf_logits(path: str, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.parametrize("arch", ["gpt2", "qwen2", "llama"])
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


def test_mixed_architectures_are_refused_before_any_weights_load(hf_dirs, monkeypatch):
    """The config.json files are compared first: the error names both models, both directories
    and both architectures, and no model was booted."""
    import workbench.core.hf as hf

    booted = []
    monkeypatch.setattr(hf, "boot_hf_dir", lambda path, **kw: booted.append(path))
    with pytest.raises(IncompatibleModelsError) as err:
        Lineage.from_hf_dirs({"base": hf_dirs["gpt2"], "student": hf_dirs["gpt2"], "teacher": hf_dirs["qwen2"]})
    msg = str(err.value)
    assert "'base' and 'teacher'" in msg and hf_dirs["gpt2"] in msg and hf_dirs["qwen2"] in msg
    assert "gpt2 (GPT2LMHeadModel)" in msg and "qwen2 (Qwen2ForCausalLM)" in msg
    assert "model_type 'gpt2' vs 'qwen2'" in msg and "No weights were loaded" in msg
    assert booted == []


def test_config_fields_are_read_under_each_familys_names(hf_dirs, tmp_path):
    from workbench.core.hf_config import architecture, check_hf_configs, read_hf_config

    gpt2 = architecture(read_hf_config("base", Path(hf_dirs["gpt2"])))
    qwen2 = architecture(read_hf_config("base", Path(hf_dirs["qwen2"])))
    assert gpt2 == {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "hidden size": 32, "layers": 2,
                    "attention heads": 4, "vocab size": 100}
    assert qwen2["hidden size"] == 32 and qwen2["layers"] == 2 and qwen2["vocab size"] == 100
    # same family, another size: the differing field is named
    cfg = json.loads((Path(hf_dirs["qwen2"]) / "config.json").read_text())
    for field, value, label in (("num_hidden_layers", 3, "layers 2 vs 3"), ("vocab_size", 120, "vocab size 100 vs 120"),
                                ("hidden_size", 48, "hidden size 32 vs 48")):
        (tmp_path / field).mkdir()
        (tmp_path / field / "config.json").write_text(json.dumps({**cfg, field: value}))
        with pytest.raises(IncompatibleModelsError, match=f"'base' and 'student'.*{label}"):
            check_hf_configs({"base": Path(hf_dirs["qwen2"]), "student": tmp_path / field})
    # a nested text_config (multimodal configs) is read too; fields a config lacks are not compared
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "config.json").write_text(json.dumps({"model_type": "qwen2", "text_config": {"hidden_size": 32}}))
    assert check_hf_configs({"base": Path(hf_dirs["qwen2"]), "x": tmp_path / "nested"})["x"]["hidden size"] == 32
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="'broken'.*cannot read"):
        check_hf_configs({"broken": tmp_path / "broken"})


def test_check_hf_dir_resolves_and_boot_records_provenance(hf_dirs, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(hf_dirs["gpt2"])
    assert check_hf_dir("base", link) == link.resolve()
    models, meta = boot_hf_dirs({"base": link, "cross": hf_dirs["gpt2"]})
    assert list(models) == ["base", "cross"]
    assert meta["base"] == {"hf_dir": str(link.resolve()), "trust_remote_code": False}
    with pytest.raises(ArtifactError, match="'missing'"):  # every directory is checked before any boot
        boot_hf_dirs({"base": hf_dirs["gpt2"], "missing": tmp_path / "nope"})


def test_hf_offline_restores_the_environment(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    before = hub_constants.HF_HUB_OFFLINE
    with hf_offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert hub_constants.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["TRANSFORMERS_OFFLINE"] == "0"
    assert hub_constants.HF_HUB_OFFLINE == before
