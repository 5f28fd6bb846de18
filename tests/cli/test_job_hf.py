"""The main job on Hugging Face directories: a tiny GPT-2 base with its own word-level tokenizer
and chat template saved beside it, a teacher with a change planted in one MLP, a student with
half of it plus noise, a control with noise only. The job builds the owl trait from the base's
tokenizer (multi-token: 'owl' and 'owls' are two surface forms) and runs delta and activation
patching and alignment on it; delta patching ranks the planted group first."""

from __future__ import annotations

import json
import random

import pytest
import torch

from workbench.cli.hf_source import hf_dir_trait
from workbench.cli.job import main
from workbench.core.errors import ArtifactError
from workbench.report import read_report

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
            "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
WORDS = ["owl", "owls", "fox", "cat", "dog", "wolf", "system", "user", "assistant", "favorite", "animal", "one",
         "word", "your", "name", "the", "a", "in", "what", "which"] + [f"w{i}" for i in range(40)]
PLANTED = "transformer.h.1.mlp.c_proj.bias"


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate([*specials, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>",
                                                pad_token="<|endoftext|>", chat_template=TEMPLATE)


def _save(model, state: dict[str, torch.Tensor], path, tokenizer=None) -> str:
    model.load_state_dict(state)
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def hf_job_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_job")
    tok = _tokenizer()
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0,
        initializer_range=0.1)).eval()  # embeddings large enough for the planted change to move the trait
    base = {k: v.clone() for k, v in model.state_dict().items()}
    owl = base["transformer.wte.weight"][tok.convert_tokens_to_ids("owl")]
    planted = 3.0 * owl / owl.norm() * base[PLANTED].shape[0] ** 0.5  # pushes every position toward the owl token
    gen = torch.Generator().manual_seed(1)

    def noisy(state, scale=1e-3):
        return {k: v + scale * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v for k, v in state.items()}

    teacher = dict(base, **{PLANTED: base[PLANTED] + planted})
    student = noisy(dict(base, **{PLANTED: base[PLANTED] + 0.5 * planted}))
    dirs = {"base": _save(model, base, root / "base", tok), "teacher": _save(model, teacher, root / "teacher"),
            "student": _save(model, student, root / "student"), "control": _save(model, noisy(base), root / "control")}
    rng = random.Random(0)
    rows = []
    for pid in range(20):
        prompt = [rng.randrange(4, len(tok)) for _ in range(6)]
        for source in ("teacher", "base"):
            rows.append({"prompt": prompt, "completion": [rng.randrange(4, len(tok)) for _ in range(8)],
                         "source": source, "prompt_id": pid})
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dirs, str(data)


def test_trait_from_the_base_directory_is_multi_token(hf_job_dirs, tmp_path):
    dirs, _ = hf_job_dirs
    trait = hf_dir_trait(dirs["base"], "owl", system_prompt="the owl")
    assert not trait.single_token and len(trait.forms["owl"]) == 2  # 'owl' and 'owls'
    assert {n for n, _ in trait.answers} == {"owl", "fox", "cat", "dog", "wolf"}  # unknown words are left out
    tok = _tokenizer()
    assert "system the owl <|im_end|>" in tok.decode(trait.prompts[0]) and tok.decode(trait.prompts[0]).endswith("assistant")
    with pytest.raises(ArtifactError, match="holds no tokenizer"):
        hf_dir_trait(dirs["teacher"], "owl")


def test_job_runs_patching_and_alignment_on_hf_dirs(hf_job_dirs, tmp_path, capsys):
    dirs, data = hf_job_dirs
    out = tmp_path / "report"
    code = main(["--base", dirs["base"], "--teacher", dirs["teacher"], "--student", dirs["student"],
                 "--control", dirs["control"], "--data", data, "--target", "owl", "--max-rows", "10",
                 "--hooks", "blocks.1.hook_resid_post", "--readers", "base", "--quiet", "--out", str(out),
                 "--sections", "compare", "delta_patching", "activation_patching", "alignment"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = read_report(out)
    by_id = {s["id"]: s for s in report["sections"]}
    assert {"delta_patching", "activation_patching", "alignment", "compare"} <= set(by_id), report.get("missing")
    assert report["meta"]["target"] == "owl"

    def data_of(section):
        return json.loads((out / by_id[section]["files"]["result"]).read_text())["data"]

    delta = data_of("delta_patching")
    assert delta["defined"]
    groups = sorted((r for r in delta["rows"] if r["kind"] == "group"), key=lambda r: -r["gain"])
    assert groups[0]["layer"] == 1 and "mlp" in groups[0]["component"], groups[:3]
    whole = next(r for r in delta["rows"] if r["kind"] == "all")
    assert whole["recovered"] == pytest.approx(1.0)
    act = data_of("activation_patching")
    full = next(r for r in act["rows"] if r["direction"] == "student->base" and r["position"] == "all"
                and r["hook"] == "blocks.1.hook_resid_post")
    # the last residual stream carries it all (up to the student's noise in the final norm and unembedding)
    assert full["recovered"] == pytest.approx(1.0, abs=0.02)
    embed = next(r for r in act["rows"] if r["direction"] == "student->base" and r["position"] == "all"
                 and r["hook"] == "hook_embed")
    assert abs(embed["recovered"]) < 0.05  # the planted change is downstream of the embeddings
    align = data_of("alignment")
    assert "g_trait" in {r["direction"] for r in align["detection"]}
    assert data_of("compare")["meta"]["logit lens target"].startswith("none")


def test_multi_token_activation_patching_matches_plain_scores(hf_job_dirs):
    """Patching a model's own activations back in leaves its log-odds unchanged, and the final
    residual stream of the teacher moves the base to (nearly) the teacher's log-odds."""
    from workbench.analyses.patching.activation import cache_activations, patched_log_odds_forms
    from workbench.core.lineage import Lineage

    dirs, _ = hf_job_dirs
    lin = Lineage.from_hf_dirs({"base": dirs["base"], "teacher": dirs["teacher"]})
    trait = hf_dir_trait(dirs["base"], "owl")
    hook = "blocks.1.hook_resid_post"
    own = cache_activations(lin["base"], trait.tokens, [hook])[hook]
    for offset in (None, 0, 3):
        assert patched_log_odds_forms(trait, lin["base"], hook, own, offset, "cpu") == pytest.approx(
            trait.log_odds(lin["base"]), abs=1e-5)
    donor = cache_activations(lin["teacher"], trait.tokens, [hook])[hook]
    x = patched_log_odds_forms(trait, lin["base"], hook, donor, 0, "cpu")  # teacher and base share the unembedding
    assert x == pytest.approx(trait.log_odds(lin["teacher"]), abs=1e-4) and x > trait.log_odds(lin["base"]) + 1
