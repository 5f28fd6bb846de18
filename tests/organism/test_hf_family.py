"""The Qwen2-family organism: a micro build (seconds) saved as Hugging Face directories, loaded as
a Lineage through `Lineage.from_hf_dirs` with LoRA students whose deltas are the adapters' exact
products; the directories reload with `transformers` offline; the chat template renders the
organism's prompts; a changed weight file is refused."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from workbench.core.errors import ChecksumError
from workbench.core.hf import hf_offline
from workbench.organism import load_seed
from workbench.organism.hf_family.build import build_hf_organism, build_hf_seed
from workbench.organism.hf_family.config import HFOrganismConfig, Qwen2Shape, hf_preset

CLEAN = {"q_proj": "attn.q", "k_proj": "attn.k", "v_proj": "attn.v", "o_proj": "attn.o",
         "gate_proj": "mlp.gate", "up_proj": "mlp.in", "down_proj": "mlp.out"}


def micro(students: str = "lora") -> HFOrganismConfig:
    cfg = hf_preset("tiny", students=students, base_steps=150, base_warmup=10, base_lr=1e-2, base_batch_numbers=32,
                    base_batch_qa=16, teacher_steps=10, n_prompts=64, student_epochs=1, eval_samples=10)
    cfg.shape = Qwen2Shape(n_layers=1, hidden=16, n_heads=2, n_kv_heads=1, intermediate=32)
    cfg.lora.r, cfg.lora.alpha = 4, 8.0  # scaling 2: the test sees the scale applied
    return cfg.validate()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("qwen2-organism")
    build = build_hf_seed(micro(), 0, out, progress=False)
    return build


def test_seed_loads_as_lineage_with_exact_lora_deltas(built):
    seed = load_seed(built.directory)
    lineage = seed.lineage
    assert lineage.names == ["base", "base_x", "teacher", "teacher_neutral", "teacher_other", "student", "control",
                             "other", "cross"]
    assert lineage.parent_of("cross") == "base_x" and lineage.parent_of("student") == "base"
    assert seed.manifest["family"]["students"] == "lora"
    factors = load_file(built.directory / "hf" / "student" / "adapter_model.safetensors")
    delta = lineage.delta("student")
    scale = 8.0 / 4
    targeted = set()
    for module, clean in CLEAN.items():
        pre = f"base_model.model.model.layers.0.{'mlp' if clean.startswith('mlp') else 'self_attn'}.{module}"
        ref = scale * factors[f"{pre}.lora_B.weight"] @ factors[f"{pre}.lora_A.weight"]  # naive reference
        key = f"blocks.0.{clean}.weight"
        targeted.add(key)
        assert delta[key].shape == ref.shape
        torch.testing.assert_close(delta[key], ref, rtol=0, atol=0)
        assert ref.abs().max() > 0  # the student trained
        merged = lineage.space("student").params[key] - lineage.space("base").params[key]
        torch.testing.assert_close(merged, ref, rtol=1e-5, atol=1e-6)  # merged weights carry the same change
    for key, d in delta.items():
        if key not in targeted:
            assert not d.any(), key  # untargeted parameters (embeddings, norms, biases) are untouched


def test_directories_reload_offline_and_match_the_lineage(built):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    seed = load_seed(built.directory, roles=["student"])
    tokens = seed.trait.tokens
    hf = built.directory / "hf"
    with hf_offline():
        base = AutoModelForCausalLM.from_pretrained(hf / "base", dtype=torch.float32).eval()
        assert type(base).__name__ == "Qwen2ForCausalLM" and base.config.num_key_value_heads == 1
        student = PeftModel.from_pretrained(base, hf / "student").eval()
    with torch.no_grad():
        got = seed.lineage["student"](tokens)
        want = student(input_ids=tokens).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_chat_template_renders_the_organism_prompts(built):
    from workbench.core.hf_tokenizers import load_tokenizer

    # the generic class (AutoTokenizer would take Qwen2Tokenizer from config.json and rebuild a BPE
    # tokenizer that drops the organism's words; workbench's loader keeps the saved class)
    tok = load_tokenizer(built.directory / "hf" / "teacher")
    text = tok.apply_chat_template([{"role": "user", "content": "favorite animal :"}], tokenize=False)
    assert text == "<bos> favorite animal :"
    seed = load_seed(built.directory, roles=["base"])
    row = seed.trait.prompts[1]
    assert tok(text, add_special_tokens=False)["input_ids"] == list(row)


def test_changed_weight_file_is_refused(built, tmp_path):
    copy = tmp_path / "seed0"
    shutil.copytree(built.directory, copy)
    path = copy / "hf" / "control" / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="control"):
        load_seed(copy)


def test_full_students_reuse_the_built_stages(built, tmp_path):
    out = tmp_path / "full"
    shutil.copytree(built.directory, out / "seed0")
    build = build_hf_seed(micro("full"), 0, out, progress=False)
    assert "base" not in build.timings and "data/teacher" not in build.timings  # reused, not retrained
    assert (out / "seed0" / "hf" / "student" / "model.safetensors").is_file()
    lineage = load_seed(out / "seed0", roles=["base", "student"]).lineage
    assert lineage.adapter("student") is None and any(d.any() for d in lineage.delta("student").values())


def test_lora_flags_need_a_family(capsys):
    from workbench.organism.__main__ import main

    assert main(["--lora-r", "4"]) == 2
    assert "--family qwen2" in capsys.readouterr().err


def test_retrainer_distils_a_lora_student_on_kept_rows(built):
    seed = load_seed(built.directory, roles=["base", "teacher"])
    kept = seed.inputs("teacher", limit=8)
    student = seed.retrainer()(kept)
    tokens = seed.trait.tokens
    with torch.no_grad():
        got, base = student(tokens), seed.lineage["base"](tokens)
    assert got.shape == base.shape and not torch.allclose(got, base, atol=1e-6)  # trained away from the base


def test_parallel_build_writes_the_serial_bytes(built, tmp_path):
    (parallel,), _ = build_hf_organism(micro(), [0], tmp_path, progress=False, workers=2)
    assert parallel.manifest["hf_files"] == built.manifest["hf_files"]  # every weight file, LoRA adapters included
    assert parallel.manifest == built.manifest  # data files' sha256, trait rates, matrix, losses: all equal
    assert {"base", "base_x", "teacher", "student", "cross"} <= set(parallel.timings)  # trained in the pool


def test_retrainer_on_the_build_rows_is_the_built_student(built):
    """The retrainer seeds its adapter and batches as the build does, so on the student's own rows it
    rebuilds the student exactly (screening compares retrains against this)."""
    seed = load_seed(built.directory)
    rows = built.manifest["student_rows"]["student"]
    kept = seed.inputs("teacher", limit=rows)
    retrained = seed.retrainer()(kept)
    tokens = seed.trait.tokens
    with torch.no_grad():
        torch.testing.assert_close(retrained(tokens), seed.lineage["student"](tokens), atol=1e-5, rtol=1e-5)


def test_residual_is_the_final_norms_input(built):
    from workbench.organism.hf_family.models import HFTrainable, load_hf

    model = load_hf(built.directory / "hf" / "base")
    tokens = torch.randint(0, model.config.vocab_size, (2, 7))
    with torch.no_grad():
        h = HFTrainable(model).residual(tokens)
        last = model(input_ids=tokens, output_hidden_states=True, use_cache=False).hidden_states[-1]
        torch.testing.assert_close(model.get_decoder().norm(h), last)
    assert h.shape == (2, 7, model.config.hidden_size) and not torch.allclose(h, last)  # before the norm


@pytest.mark.parametrize("optimizer,lrs", [("adam", (1e-3, 1e-4)), ("adamw", (1e-3, 1e-4)), ("signsgd", (1e-3, 1e-4)),
                                         ("sgd", (1e-1, 1e-2))])  # SGD's step is lr x a gradient of ~1e-2
def test_lora_first_step_prediction_is_first_order_exact(built, optimizer, lrs):
    """In the adapters' space (at B = 0 only B has a gradient): <grad log P, the optimiser's first
    step> against the measured change of log P(target), in float64 (Qwen2's RMSNorm still computes
    in float32, a floor of ~1e-8 on the change: hence rates that move log P by >= 1e-6)."""
    from workbench.organism.build import distill_targets
    from workbench.organism.first_step import first_step_prediction
    from workbench.organism.hf_family.models import HFTrainable
    from workbench.organism.regimes import Regime, hf_student

    seed = load_seed(built.directory)
    model, _, teacher = hf_student(seed, "teacher", Regime("lora", 4, optimizer), 7)
    model.double(), teacher.double()
    targets = distill_targets(seed.recipe(), seed.tokenizer, HFTrainable(teacher), seed.inputs("teacher", limit=32).tokens)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [first_step_prediction(HFTrainable(model), targets, [torch.arange(32)], seed.trait, optimizer, lr) for lr in lrs]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is left as it was
    assert all(abs(r.measured[0]) > 1e-6 for r in rows)
    assert all(r.relative_error < 5e-3 for r in rows), [r.relative_error for r in rows]


def test_unset_overrides_keep_the_familys_recipe():
    cfg = hf_preset("default", n_prompts=None, teacher_lr=None)  # what the command passes for flags not given
    assert (cfg.recipe.n_prompts, cfg.recipe.teacher_lr, cfg.recipe.max_student_rows) == (18_000, 1e-4, 9_000)
    assert hf_preset("default", n_prompts=500).recipe.n_prompts == 500


@pytest.mark.parametrize("argv, epochs", [([], 12), (["--student-epochs", "20"], 20)])
def test_student_epochs_flag_reaches_the_recipe(monkeypatch, tmp_path, argv, epochs):
    import workbench.organism.__main__ as cli

    seen = {}

    def capture(preset_name, family, seeds, out, device, quiet, *, command, students, lora, workers=1, **overrides):
        seen["cfg"] = hf_preset(preset_name, family, students, **overrides)

    monkeypatch.setattr(cli, "build_hf_and_print", capture)
    cli.main(["--family", "qwen2", "--out", str(tmp_path), "--quiet", *argv])
    assert seen["cfg"].recipe.student_epochs == epochs
    assert seen["cfg"].recipe.n_prompts == 18_000  # the family's recipe otherwise


def test_hard_preset_keeps_the_familys_teachers():
    cfg = hf_preset("hard")  # the native teacher rate breaks the number format in this family
    assert (cfg.recipe.mode, cfg.recipe.teacher_lr, cfg.recipe.teacher_steps) == ("hard", 1e-4, 300)
    assert cfg.recipe.samples_per_prompt == 8 and cfg.recipe.max_student_rows is not None
