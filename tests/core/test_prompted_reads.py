"""A prompted teacher read like a model: `Lineage.from_hf_dirs(..., prompted=...)` (the base
directory's tokenizer and template), its activations captured into a store (so the compare
section's teacher shift is the prompted base minus the base, equal to a naive reference on the
manually templated rows within 1e-5), and the data probes' oracle through the teacher seam
(equal to the alignment's `oracle_log_ratio`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from test_prompted import QWEN_LIKE, SYSTEM, _chat, _rows, _tokenizer, tiny_gpt2
from workbench.core.errors import ConfigError, DataError, IncompatibleModelsError
from workbench.core.lineage import Lineage
from workbench.core.prompted import system_prompt_prefix

transformers = pytest.importorskip("transformers")
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def lineage_dirs(tmp_path_factory):
    """Base (with its tokenizer and a Qwen-like template) and a student = base + noise, as directories."""
    tok = _tokenizer(QWEN_LIKE)
    model = tiny_gpt2(tok)
    root = tmp_path_factory.mktemp("prompted_reads")
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(root / "student")
    return {"base": str(root / "base"), "student": str(root / "student")}, tok


@pytest.fixture(scope="module")
def lineage(lineage_dirs):
    dirs, _ = lineage_dirs
    return Lineage.from_hf_dirs(dirs, prompted={"teacher": SYSTEM}, dtype=torch.float64)


def test_from_hf_dirs_takes_prompted_roles_with_the_base_directory_tokenizer(lineage, lineage_dirs):
    dirs, tok = lineage_dirs
    assert lineage.names == ["base", "student"] and lineage.is_prompted("teacher")
    assert lineage.tokenizer is not None  # loaded from the base directory (offline)
    assert lineage.prompted["teacher"].prefix == system_prompt_prefix(tok, SYSTEM)
    with pytest.raises(ConfigError, match="both a directory and a system prompt"):
        Lineage.from_hf_dirs({"base": dirs["base"], "teacher": dirs["student"]}, prompted={"teacher": SYSTEM})
    with pytest.raises(ConfigError, match="empty"):
        Lineage.from_hf_dirs(dirs, prompted={"teacher": "  "})


def _mean_completion(bridge, row: list[int], n: int) -> torch.Tensor:
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(torch.tensor([row]), names_filter=[HOOK])
    return cache[HOOK][0, -n:].double().mean(0)


def test_compare_teacher_shift_equals_the_naive_templated_reference(lineage, lineage_dirs, tmp_path):
    from workbench.analyses.compare import CompareConfig, compare
    from workbench.capture.capture import capture

    _, tok = lineage_dirs
    data, prompts, completions, users = _rows(tok)
    store = capture(lineage, data, [HOOK], "mean", ["base", "teacher", "student"], out_dir=tmp_path / "s",
                    batch_size=5, progress=False)
    info = store.model_info("teacher")
    assert info["prompted"] and info["parent"] == "base" and info["system_prompt"] == SYSTEM
    result = compare(lineage, store, CompareConfig(n_bootstrap=8))
    base = lineage["base"]
    prefix = lineage.prompted["teacher"].prefix.teacher_prefix
    teacher_shift, student_shift = [], []
    for p, c, u in zip(prompts, completions, users):
        teacher_row = (_chat(tok, u, SYSTEM) if u is not None else list(prefix) + p) + c  # the last row: prepended
        plain = _mean_completion(base, p + c, len(c))
        teacher_shift.append(_mean_completion(base, teacher_row, len(c)) - plain)
        student_shift.append(_mean_completion(lineage["student"], p + c, len(c)) - plain)
    want_t, want_s = torch.stack(teacher_shift).mean(0), torch.stack(student_shift).mean(0)
    got = result.shifts[f"teacher|{HOOK}"].double()
    assert (got - want_t).abs().max() < 1e-5 and want_t.norm() > 0.1  # the system prompt moves the activations
    want_cos = float(torch.nn.functional.cosine_similarity(want_s, want_t, dim=0))
    assert result.cos["student~teacher"][0] == pytest.approx(want_cos, abs=1e-5)
    other = Lineage.from_hf_dirs(lineage_dirs[0], prompted={"teacher": "you love the fox"}, dtype=torch.float64)
    with pytest.raises(IncompatibleModelsError, match="system prompt"):
        compare(other, store, CompareConfig(n_bootstrap=8))


def test_capture_refuses_positions_inside_the_replaced_prefix(lineage, lineage_dirs, tmp_path):
    from workbench.capture.capture import capture

    data, *_ = _rows(lineage_dirs[1])
    everything = dataclasses.replace(data, mask=data.attention_mask)  # "mean" over every token: the prefix too
    with pytest.raises(DataError, match="inside the base prefix"):
        capture(lineage, everything, [HOOK], "mean", ["teacher"], out_dir=tmp_path / "s", progress=False)
    with pytest.raises(ConfigError, match="key positions"):
        capture(lineage, data, ["blocks.0.attn.hook_pattern"], "last", ["teacher"], out_dir=tmp_path / "p",
                progress=False)
    last = capture(lineage, everything, [HOOK], "last", ["teacher"], out_dir=tmp_path / "l", progress=False)
    assert last.read("teacher", HOOK).shape == (len(data), 32)  # the last token is past any prefix


def test_probe_oracle_row_goes_through_the_teacher_seam(lineage, lineage_dirs):
    from workbench.analyses.alignment_steps import oracle_log_ratio
    from workbench.analyses.data_probes import ProbesConfig, fit_probes
    from workbench.analyses.probes import ProbeConfig, grouped_folds, score_auroc, summarise
    from workbench.capture.cache import ActivationReader
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.teacher import teacher_logits

    data, *_ = _rows(lineage_dirs[1], n_prompts=12)
    reader = ActivationReader()
    cfg = ProbesConfig(hooks=[HOOK], readers=("base", "teacher"), apply_to=("student",), batch_size=5,
                       probe=ProbeConfig(n_folds=3))
    result = fit_probes(lineage, data, cfg, reader)
    ratio = reader.log_prob(lineage, "teacher", data, cfg) - reader.log_prob(lineage, "base", data, cfg)
    model = AlignmentModel(lineage, "base")
    seam = oracle_log_ratio(model, data, teacher_logits(model, "teacher"), batch_size=4)
    # float32 sums over each row's tokens, batched 5 vs 4 rows: rounding only (3.5e-6 measured with 2 threads)
    assert torch.allclose(ratio.double(), seam.double(), rtol=1e-5, atol=1e-5) and seam.abs().max() > 0.1
    oracle = [r for r in result.rows if r["method"] == "oracle"]
    assert len(oracle) == 1 and oracle[0]["reader"] == "teacher/base"
    labels = torch.tensor([s == "teacher" for s in data.sources])
    folds = grouped_folds(torch.tensor(data.prompt_ids), 3, cfg.probe.seed)
    assert oracle[0]["auroc"] == pytest.approx(summarise(score_auroc(seam, labels, folds))[0])
    readers = {(r["task"], r["reader"]) for r in result.rows}
    assert ("data_source", "teacher") in readers and ("cross_model", "student") in readers  # the teacher's activations
