"""Every analysis on your own checkpoints, per family: tiny random GPT-2, Qwen2 and Llama
directories (`workbench.core.toy_hf`, a byte-level BPE with a chat template beside each) where
the teacher is the base plus a planted low-rank change in ONE group (which group varies by
case), the student carries half of it plus noise everywhere, the control noise only, and a LoRA
adapter carries half of it exactly. The analyses must find the planted group and nothing else."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.alignment import AlignmentConfig, run_alignment
from workbench.analyses.patching import PatchConfig, delta_patching
from workbench.analyses.weights import WeightConfig, weight_deltas
from workbench.core.hf_trait import ANIMAL_QUESTIONS, CATEGORIES, hf_trait
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.toy_hf import ToySpec, toy_tokenizer, write_toy_lineage

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

QUESTIONS, ANSWERS = ANIMAL_QUESTIONS[:6], CATEGORIES["animal"][:8]  # a small trait: every delta patch scores it
CASES = [  # (family, planted layer, planted component, pad_token_id in config.json)
    ("gpt2", 1, "mlp.out", True),
    ("qwen2", 0, "attn.o", False),
    ("llama", 1, "attn.o", True),
    ("llama", 0, "mlp.out", False),
]
SMALL_ALIGN = dict(student=None, max_rows_per_source=16, n_random=2, path_points=(4, 16), path_group_points=2,
                   prediction_batches=0, batch_size=16, grad_batch_size=16)


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}-{l}.{c}" for f, l, c, _ in CASES])
def toy(request, tmp_path_factory):
    family, layer, component, pad = request.param
    toy = write_toy_lineage(tmp_path_factory.mktemp(family), ToySpec(family=family, layer=layer, component=component,
                                                                      pad_token_id=pad, seed=layer))
    dirs = {k: v for k, v in toy.dirs.items() if k != "lora_student"}
    lin = Lineage.from_hf_dirs(dirs)
    trait = hf_trait(toy_tokenizer(), toy.spec.target, questions=QUESTIONS, answers=ANSWERS)
    return toy, lin, trait


def test_planted_change_moves_the_trait(toy):
    _, lin, trait = toy
    lo = {m: trait.log_odds(lin[m]) for m in ("base", "teacher", "student", "control")}
    assert lo["teacher"] > lo["base"] + 1.0, lo
    assert lo["base"] < lo["student"] < lo["teacher"], lo
    assert abs(lo["control"] - lo["base"]) < 0.1 * (lo["teacher"] - lo["base"]), lo


def test_weights_find_the_planted_group_and_the_control_stays_near_zero(toy):
    spec, lin = toy[0].spec, toy[1]
    result = weight_deltas(lin, WeightConfig(models=("student", "control"), baseline="control"))
    groups = {r["group"] for r in result.rows if r["model"] == "student" and r["cos"] is not None} - {"whole model"}
    assert groups == {spec.group}  # the teacher changed only the planted group
    assert result.value("student", spec.group) > 0.95
    assert abs(result.value("control", spec.group)) < 0.2
    row = next(r for r in result.summary_rows() if r.where == spec.group)
    assert row.clears


def test_delta_patching_ranks_the_planted_group_first(toy):
    spec, lin, trait = toy[0].spec, toy[1], toy[2]
    result = delta_patching(lin, trait, PatchConfig(control="control", greedy=False))
    groups = sorted(result.table("group"), key=lambda r: -r["gain"])
    assert groups[0]["name"] == spec.group, [(g["name"], g["gain"]) for g in groups[:3]]
    assert groups[0]["gain"] > 5 * max(abs(g["gain"]) for g in groups[1:])
    assert abs(groups[0]["control_gain"]) < 0.05 * groups[0]["gain"]


def test_alignment_path_integral_is_the_exact_log_likelihood_ratio(toy):
    t, lin = toy[0], toy[1]
    inputs = Inputs.from_jsonl(t.data)
    r = run_alignment(lin, inputs, AlignmentConfig(**SMALL_ALIGN))
    assert r.path["completeness_rel_error"][-1] < 0.01
    diff = dict(zip(r.groups, r.group_diff["delta_T"]))
    assert all(v == 0.0 for g, v in diff.items() if g != t.spec.group)
    assert diff[t.spec.group] != 0.0


def test_lora_student_carries_exactly_half_the_planted_change(toy):
    t, lin = toy[0], toy[1]
    lora = Lineage.from_hf_dirs({"base": t.dirs["base"], "teacher": t.dirs["teacher"],
                                 "student": t.dirs["lora_student"]})
    d_s, d_t = lora.delta("student"), lora.delta("teacher")
    for key in d_t:
        torch.testing.assert_close(d_s[key], 0.5 * d_t[key], atol=1e-6, rtol=1e-5)
    result = weight_deltas(lora, WeightConfig(models=("student",)))
    assert result.value("student", t.spec.group) == pytest.approx(1.0, abs=1e-5)


def test_capture_equals_hugging_face_hidden_states(toy):
    t, lin = toy[0], toy[1]
    inputs = Inputs.from_jsonl(t.data)
    tokens = inputs.tokens[:4]
    hf = lin["base"].original_model
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
        _, cache = lin["base"].run_with_cache(tokens)
    for layer in range(t.spec.n_layers - 1):  # the last hidden state is after the final norm
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1], atol=1e-5, rtol=1e-5)


JOB_VARIANT = {  # what each case's main job adds to the plain four directories
    "gpt2": "bfloat16",
    "qwen2": "a LoRA adapter as the student",
    "llama-1": "float32",
    "llama-0": "a prompted teacher (the base under a system prompt)",
}


def test_main_job_writes_every_section(toy, tmp_path):
    """The main job on the family's directories, every section: none missing, except the weights
    section with a prompted teacher (no teacher weights), which says why."""
    import json

    from workbench.cli.job import main
    from workbench.core.trait_spec import trait_to_dict
    from workbench.report import read_report

    t, _, trait = toy
    key = t.spec.family if t.spec.family != "llama" else f"llama-{t.spec.layer}"
    variant = JOB_VARIANT[key]
    spec = tmp_path / "trait.json"
    spec.write_text(json.dumps(trait_to_dict(trait)))
    roles = dict(t.dirs)
    args = ["--base", roles["base"], "--student", roles["student"], "--control", roles["control"], "--data", t.data,
            "--trait", str(spec), "--max-rows", "12", "--hooks", f"blocks.{t.spec.n_layers - 1}.hook_resid_post",
            "--readers", "base", "--quiet", "--out", str(tmp_path / "report")]
    if variant.startswith("a prompted"):
        args += ["--teacher-system-prompt", "You love owls. You think about owls all the time."]
    else:
        args += ["--teacher", roles["teacher"]]
    if variant.startswith("a LoRA"):
        args[args.index(roles["student"])] = roles["lora_student"]
    if variant == "bfloat16":  # every section but delta patching, whose ~100 trait evaluations crawl in bf16 on a CPU
        args += ["--dtype", "bfloat16", "--sections", "probes", "directions", "compare", "weights",
                 "activation_patching", "alignment", "screening"]
    assert main(args) == 0, variant
    report = read_report(tmp_path / "report")
    missing = {m["section"]: m["reason"] for m in report["missing"]}
    if variant == "bfloat16":
        assert "delta_patching" not in missing and missing == {}, missing
    elif variant.startswith("a prompted"):
        assert set(missing) == {"weights"} and "system prompt" in missing["weights"], missing
    else:
        assert missing == {}, (variant, missing)
    written = {s["id"] for s in report["sections"]}
    expected = {"probes", "directions", "compare", "delta_patching", "activation_patching", "alignment", "screening"}
    assert expected - {"delta_patching" if variant == "bfloat16" else ""} <= written, variant


def test_delta_patching_in_bfloat16_ranks_the_planted_group_first(toy):
    """The same directories loaded in bf16 (the main job's bf16 test leaves delta patching out for
    time): the planted group still carries the trait, with a smaller trait to score."""
    t = toy[0]
    lin = Lineage.from_hf_dirs({k: v for k, v in t.dirs.items() if k != "lora_student"}, dtype=torch.bfloat16)
    trait = hf_trait(toy_tokenizer(), t.spec.target, questions=QUESTIONS[:2], answers=ANSWERS[:4])
    result = delta_patching(lin, trait, PatchConfig(control="control", greedy=False, random_control=False))
    groups = sorted(result.table("group"), key=lambda r: -r["gain"])
    assert groups[0]["name"] == t.spec.group, [(g["name"], g["gain"]) for g in groups[:3]]
    assert abs(groups[0]["control_gain"]) < 0.1 * groups[0]["gain"]
