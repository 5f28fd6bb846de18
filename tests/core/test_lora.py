"""peft LoRA adapters as lineage roles: tiny Qwen2 and GPT-2 bases, adapters made with peft
(B set non-zero), checked against peft's own merge_and_unload; clear errors on bad adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from workbench.analyses.weights import WeightConfig, weight_deltas
from workbench.core.errors import ArtifactError, ConfigError, IncompatibleModelsError
from workbench.core.hf import check_hf_dir
from workbench.core.lineage import Lineage
from workbench.core.lora import read_adapter

peft = pytest.importorskip("peft")

TOKENS = torch.tensor([[1, 5, 9, 2, 7, 3], [4, 4, 8, 0, 1, 6]])
TARGETS = {"qwen2": ["q_proj", "v_proj", "up_proj"], "gpt2": ["c_attn", "c_fc"]}


def _base(arch: str, hidden: int = 32):
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=hidden, n_head=4, vocab_size=100, n_positions=32))
    return Qwen2ForCausalLM(
        Qwen2Config(
            num_hidden_layers=2, hidden_size=hidden, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, vocab_size=100, max_position_embeddings=64,
        )
    )  # fmt: skip


def _adapter(base_dir: str, out: Path, arch: str, seed: int, **lora_kwargs) -> tuple[str, str]:
    """Save a peft adapter with random non-zero B, and peft's own merged model; returns both dirs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    kwargs = {"r": 4, "lora_alpha": 8, "target_modules": TARGETS[arch], **lora_kwargs}
    pm = get_peft_model(model, LoraConfig(**kwargs))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # peft initialises B to zero
            elif "modules_to_save" in name:
                p.add_(torch.randn_like(p), alpha=0.05)  # trained full copies
    ad, merged = out / f"{arch}_adapter_{seed}", out / f"{arch}_merged_{seed}"
    pm.save_pretrained(str(ad))
    pm.merge_and_unload().save_pretrained(str(merged))
    return str(ad), str(merged)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lora")
    out: dict[str, str] = {}
    for arch in ("qwen2", "gpt2"):
        torch.manual_seed(0)
        out[arch] = str(root / arch)
        _base(arch).save_pretrained(out[arch])
        out[f"{arch}_adapter"], out[f"{arch}_merged"] = _adapter(out[arch], root, arch, seed=1)
    out["qwen2_rs_adapter"], out["qwen2_rs_merged"] = _adapter(
        out["qwen2"], root, "qwen2", seed=2, use_rslora=True, lora_alpha=16
    )
    out["qwen2_mts_adapter"], out["qwen2_mts_merged"] = _adapter(
        out["qwen2"], root, "qwen2", seed=3, target_modules=["q_proj"],
        modules_to_save=["lm_head", "post_attention_layernorm"],
    )  # fmt: skip
    torch.manual_seed(0)
    out["qwen2_wide"] = str(root / "qwen2_wide")
    _base("qwen2", hidden=48).save_pretrained(out["qwen2_wide"])
    return out


EXPECTED_FACTORS = {
    "qwen2": ("attn.q", "attn.v", "mlp.in"),
    "qwen2_rs": ("attn.q", "attn.v", "mlp.in"),
    "qwen2_mts": ("attn.q",),
    "gpt2": ("attn.q", "attn.k", "attn.v", "mlp.in"),  # c_attn splits into q, k, v
}
EXPECTED_REPLACED = {"qwen2_mts": {"unembed.weight", "blocks.0.ln2.weight", "blocks.1.ln2.weight"}}


@pytest.mark.parametrize("kind", list(EXPECTED_FACTORS))
def test_delta_equals_peft_merge(dirs, kind):
    arch = kind.split("_")[0]
    lin = Lineage.from_hf_dirs(
        {"base": dirs[arch], "student": dirs[f"{kind}_adapter"], "teacher": dirs[f"{kind}_merged"]}
    )
    ours, peft_delta = lin.delta("student"), lin.delta("teacher")  # exact product vs peft merged - base
    merged = lin.adapter("student")
    targeted, replaced = set(merged.factors), set(merged.replaced)
    assert targeted == {f"blocks.{i}.{c}.weight" for i in range(2) for c in EXPECTED_FACTORS[kind]}
    assert replaced == EXPECTED_REPLACED.get(kind, set())
    for key in lin.keys:
        torch.testing.assert_close(ours[key], peft_delta[key], atol=1e-6, rtol=0)
        if key in targeted or key in replaced:
            assert ours[key].abs().max() > 1e-3
        else:
            assert torch.equal(ours[key], torch.zeros_like(ours[key]))
    # the merged bridge's weights are base + the delta
    for key in targeted:
        torch.testing.assert_close(lin.params("student")[key] - lin.params("base")[key], ours[key], atol=1e-6, rtol=0)
    record = lin.record("student")
    assert record.parent == "base" and record.meta["lora"]["r"] == 4
    assert record.meta["lora"]["use_rslora"] == (kind == "qwen2_rs")
    assert record.meta["hf_dir"] == str(Path(dirs[arch]).resolve())


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_delta_is_the_low_rank_product(dirs, arch):
    """delta() is scaling * B @ A from the safetensors file itself (GPT-2: q is c_attn's first rows)."""
    from safetensors.torch import load_file

    factors = load_file(str(Path(dirs[f"{arch}_adapter"]) / "adapter_model.safetensors"))
    module = {"qwen2": "model.layers.1.self_attn.q_proj", "gpt2": "transformer.h.1.attn.c_attn"}[arch]
    a, b = (factors[f"base_model.model.{module}.lora_{x}.weight"] for x in "AB")
    product = (8 / 4) * (b @ a)  # [d_out, d_in]
    lin = Lineage.from_hf_dirs({"base": dirs[arch], "student": dirs[f"{arch}_adapter"]})
    torch.testing.assert_close(lin.delta("student")["blocks.1.attn.q.weight"], product[:32], atol=1e-7, rtol=0)


def test_bf16_adapter(dirs):
    lin = Lineage.from_hf_dirs({"base": dirs["qwen2"], "student": dirs["qwen2_adapter"]}, dtype=torch.bfloat16)
    delta = lin.delta("student")["blocks.0.attn.q.weight"]
    exact = lin.adapter("student").factors["blocks.0.attn.q.weight"].delta(torch.float32)
    assert delta.dtype == torch.bfloat16 and torch.equal(delta, exact.to(torch.bfloat16))
    with torch.no_grad():
        assert torch.isfinite(lin["student"](TOKENS).float()).all()


def test_scaling_rslora(dirs):
    plain, rs = read_adapter(dirs["qwen2_adapter"]), read_adapter(dirs["qwen2_rs_adapter"])
    assert {m.scaling for m in plain.modules.values()} == {8 / 4}
    assert {m.scaling for m in rs.modules.values()} == {16 / 2}  # alpha / sqrt(r)
    assert read_adapter(dirs["gpt2_adapter"]).fan_in_fan_out  # Conv1D


@pytest.mark.parametrize("kind", ["qwen2", "qwen2_mts", "gpt2"])
def test_logits_equal_peft_merged_model(dirs, kind):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(dirs[f"{kind}_merged"], attn_implementation="eager").eval()
    with torch.no_grad():
        expected = hf(TOKENS).logits
    lin = Lineage.from_hf_dirs({"base": dirs[kind.split("_")[0]], "student": dirs[f"{kind}_adapter"]})
    with torch.no_grad():
        torch.testing.assert_close(lin["student"](TOKENS), expected, atol=1e-5, rtol=1e-5)
    copy = lin.copy_model("student")  # boots the base directory and loads the merged weights
    with torch.no_grad():
        torch.testing.assert_close(copy(TOKENS), expected, atol=1e-5, rtol=1e-5)


def test_weight_deltas_adapter_vs_merged_teacher(dirs):
    lin = Lineage.from_hf_dirs(
        {"base": dirs["qwen2"], "teacher": dirs["qwen2_merged"], "student": dirs["qwen2_adapter"],
         "control": dirs["qwen2_rs_adapter"]}
    )  # fmt: skip
    res = weight_deltas(lin, WeightConfig(models=("student", "control")))
    for layer in range(2):
        for comp in ("attn.q", "attn.v", "mlp.in"):
            assert res.value("student", f"blocks.{layer}.{comp}") == pytest.approx(1.0, abs=1e-6)
            assert abs(res.value("control", f"blocks.{layer}.{comp}")) < 0.5  # another random adapter


def test_check_hf_dir_accepts_adapter_and_names_both_files(dirs, tmp_path):
    assert check_hf_dir("student", dirs["qwen2_adapter"]) == Path(dirs["qwen2_adapter"]).resolve()
    with pytest.raises(ArtifactError, match="adapter_config.json"):
        check_hf_dir("student", tmp_path)


def _edited(src: str, dst: Path, **changes) -> str:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg.update(changes)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return str(dst)


def test_refusals(dirs, tmp_path):
    base = dirs["qwen2"]
    with pytest.raises(ConfigError, match="use_dora"):
        Lineage.from_hf_dirs({"base": base, "student": _edited(dirs["qwen2_adapter"], tmp_path / "d", use_dora=True)})
    with pytest.raises(ConfigError, match="'IA3' is not supported"):
        Lineage.from_hf_dirs({"base": base, "student": _edited(dirs["qwen2_adapter"], tmp_path / "i", peft_type="IA3")})
    pickled = Path(_edited(dirs["qwen2_adapter"], tmp_path / "b"))
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(ArtifactError, match="never unpickles"):
        Lineage.from_hf_dirs({"base": base, "student": str(pickled)})
    with pytest.raises(ConfigError, match="needs a parent"):
        Lineage.from_hf_dirs({"student": dirs["qwen2_adapter"]})
    with pytest.raises(ConfigError, match="needs a parent"):
        Lineage.from_hf_dirs({"base": base, "mine": dirs["qwen2_adapter"]})  # an extra role has no default parent
    lin = Lineage.from_hf_dirs({"base": base, "mine": dirs["qwen2_adapter"]}, parents={"mine": "base"})
    assert lin.adapter("mine") is not None and lin.adapter("base") is None


def test_adapter_over_another_base_is_named(dirs):
    with pytest.raises(IncompatibleModelsError, match=r"module 'model\.layers\.0\..*base's weight is \(\d+, 48\)"):
        Lineage.from_hf_dirs({"base": dirs["qwen2_wide"], "student": dirs["qwen2_adapter"]})
    with pytest.raises(
        IncompatibleModelsError, match=r"adapts .model\.layers\.0\..*which this base model does not have"
    ):
        Lineage.from_hf_dirs({"base": dirs["gpt2"], "student": dirs["qwen2_adapter"]})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_adapter_on_cuda(dirs, arch):
    """Booted on the device, GPT-2's split q/k/v still share c_attn's memory, so the mapping holds."""
    cpu = Lineage.from_hf_dirs({"base": dirs[arch], "student": dirs[f"{arch}_adapter"]})
    gpu = Lineage.from_hf_dirs({"base": dirs[arch], "student": dirs[f"{arch}_adapter"]}, device="cuda")
    for key, d in cpu.delta("student").items():
        torch.testing.assert_close(gpu.delta("student")[key].cpu(), d, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(gpu["student"](TOKENS.cuda()).cpu(), cpu["student"](TOKENS), atol=1e-4, rtol=1e-4)
