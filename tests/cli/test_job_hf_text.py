"""The main job on Hugging Face directories (tiny GPT-2 and Qwen2, a word-level tokenizer with a
chat template saved beside the base) with text distillation data (prompt/completion text for
GPT-2, chat messages for Qwen2) and `--target owl`: every section runs, none skipped (directions
from the trait's own questions; screening ranks the teacher's rows by g_trait and writes the
kept/dropped rows as JSONL)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from workbench.analyses.screening_rank import ScreeningRanking, pct
from workbench.cli.hf_source import hf_dir_trait
from workbench.cli.job import SECTIONS, main
from workbench.core.errors import DataError
from workbench.core.inputs import Inputs, read_jsonl
from workbench.core.lineage import Lineage
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective
from workbench.engines.per_example import alignment_scores
from workbench.analyses.trait_gradient import trait_gradient
from workbench.report import read_report

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from test_job_hf import WORDS, _tokenizer  # noqa: E402  (the tiny word-level tokenizer with a chat template)

N_PROMPTS = 20


def _model(family: str, vocab: int):
    torch.manual_seed(0)
    if family == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0,
            initializer_range=0.1)).eval()
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
        initializer_range=0.1)).eval()


def _text_rows(family: str) -> list[dict]:
    rng = random.Random(0)
    words = [w for w in WORDS if w.startswith("w")]
    rows = []
    for _ in range(N_PROMPTS):
        prompt = " ".join(rng.choice(words) for _ in range(5))
        for source in ("teacher", "base"):
            completion = " ".join(rng.choice(words) for _ in range(6))
            if family == "gpt2":
                rows.append({"prompt": prompt, "completion": completion, "source": source})
            else:
                rows.append({"messages": [{"role": "user", "content": prompt},
                                          {"role": "assistant", "content": completion}], "source": source})
    return rows


@pytest.fixture(scope="module", params=["gpt2", "qwen2"])
def hf_text_job(request, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(f"hf_text_{family}")
    tok = _tokenizer()
    model = _model(family, len(tok))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    layer = "transformer.h.1.mlp" if family == "gpt2" else "model.layers.1.mlp"
    planted = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in base.items() if k.startswith(layer)}

    def noisy(state):
        return {k: v + 1e-3 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                for k, v in state.items()}

    dirs = {}
    for role, state in (("base", base), ("teacher", {**base, **planted}),
                        ("student", noisy({**base, **{k: (v + base[k]) / 2 for k, v in planted.items()}})),
                        ("control", noisy(base))):
        model.load_state_dict(state)
        model.save_pretrained(root / role)
        dirs[role] = str(root / role)
    tok.save_pretrained(dirs["base"])
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _text_rows(family)))
    out = root / "report"
    code = main(["--base", dirs["base"], "--teacher", dirs["teacher"], "--student", dirs["student"],
                 "--control", dirs["control"], "--data", str(data), "--target", "owl", "--max-rows", "20",
                 "--hooks", "blocks.1.hook_resid_post", "--readers", "base", "--quiet", "--out", str(out)])
    return family, dirs, str(data), out, code


def test_every_section_runs_on_hf_dirs_with_text_data(hf_text_job, capsys):
    family, dirs, data, out, code = hf_text_job
    assert code == 0, capsys.readouterr().err
    report = read_report(out)
    assert report["missing"] == []
    assert {s["id"] for s in report["sections"]} == set(SECTIONS)
    assert report["meta"]["n_rows"] == 2 * N_PROMPTS
    directions = json.loads((out / "sections" / "directions" / "directions.json").read_text())["data"]
    assert directions  # fitted on the trait's questions answered with each animal


def test_screening_writes_the_ranking_and_the_kept_and_dropped_rows(hf_text_job):
    family, dirs, data, out, code = hf_text_job
    assert code == 0
    section = out / "sections" / "screening"
    result = ScreeningRanking.load(section)
    n = N_PROMPTS  # the teacher's rows
    assert len(result.scores) == n and len(result.rows) == n
    ranking = read_jsonl(section / "ranking.jsonl")
    assert [r["rank"] for r in ranking] == list(range(n))
    assert [r["score"] for r in ranking] == sorted(result.scores, reverse=True)
    for fraction, k in ((0.1, 2), (0.25, 5)):
        dropped = read_jsonl(section / f"dropped_{pct(fraction)}.jsonl")
        kept = read_jsonl(section / f"kept_{pct(fraction)}.jsonl")
        assert len(dropped) == k and len(kept) == n - k
        assert sorted(r["row"] for r in dropped + kept) == list(range(n))
        assert min(r["score"] for r in dropped) >= max(r["score"] for r in kept)  # the top-ranked rows
        assert {r["source"] for r in kept} == {"teacher"}
        Inputs.from_jsonl(section / f"kept_{pct(fraction)}.jsonl")  # readable back as token-id rows
    # the scores are g_trait . (-grad L_i) at the base, recomputed here for the teacher rows of the job
    tok_rows = [{k: r[k] for k in ("prompt", "completion", "source", "prompt_id")} for r in result.rows]
    lineage = Lineage.from_hf_dirs({"base": dirs["base"]})
    model = AlignmentModel(lineage, "base")
    x = Inputs.from_sequences([r["prompt"] for r in tok_rows], [r["completion"] for r in tok_rows], "teacher")
    expect = alignment_scores(model, x, trait_gradient(model, hf_dir_trait(dirs["base"], "owl")), Objective("hard")).total
    assert torch.allclose(torch.tensor(result.scores), expect.double().float(), rtol=1e-4, atol=1e-6)
    drop = next(d for d in result.drops if d["fraction"] == 0.25)
    assert drop["mean_dropped"] >= drop["mean_random"] and 0 <= drop["overlap"] <= 1


def test_text_rows_longer_than_the_base_context_fail_before_loading(hf_text_job, tmp_path, monkeypatch):
    family, dirs, data, out, code = hf_text_job

    def no_loading(*a, **k):
        raise AssertionError("the models were loaded before the data was checked")

    monkeypatch.setattr(Lineage, "from_hf_dirs", no_loading)
    rows = _text_rows(family)
    rows[3] = {**rows[3], **({"completion": " ".join(["w1"] * 80)} if family == "gpt2" else
                             {"messages": [rows[3]["messages"][0], {"role": "assistant", "content": "w1 " * 80}]})}
    bad = tmp_path / "long.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"long.jsonl:4: the row is \d+ tokens .* context is 64"):
        _run_raw(dirs, bad, tmp_path)


def _run_raw(dirs, data, tmp_path):
    """The job's run_job without the CLI's error-to-exit-code wrapper (the error itself is checked)."""
    from workbench.cli.job import parser, run_job

    args = parser().parse_args(["--base", dirs["base"], "--teacher", dirs["teacher"], "--data", str(data), "--quiet",
                                "--out", str(tmp_path / "r")])
    return run_job(args, [])
