"""`python -m workbench.align_rows` on Hugging Face directories (a tiny toy Qwen2 lineage): the
stored a_i and a_{i,t} equal the in-memory `alignment_scores` of the same rows exactly, while the
plan reads no weight (tensor hashing made to fail: the models and directions are named by their
checkpoint files); a prompted teacher has no delta_T (refused, naming why, before any weight
loads) while g_trait is scored; and a finished store is reused by a rerun."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from workbench.analyses.score_store import ScoreStore
from workbench.cli.align_rows import main
from workbench.core.file_hashes import CACHE_ENV
from workbench.core.io import sha256_file

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from workbench.core.toy_hf import ToySpec, write_toy_lineage

    return write_toy_lineage(tmp_path_factory.mktemp("toy"), ToySpec(lora_student=False))


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "file-sha256.json"))


def hf_args(toy, out, *extra: str) -> list[str]:
    return ["--base", toy.dirs["base"], "--data", toy.data, "--batch-size", "8", "--threads", "1", "--quiet",
            "--out", str(out), *extra]


def no_tensor_hashing(monkeypatch) -> None:
    import workbench.analyses.alignment_rows as rows

    def refuse(state):
        raise AssertionError("the plan read a weight tensor")

    monkeypatch.setattr(rows, "weights_sha256", refuse)


def test_hf_scores_equal_the_in_memory_scores_and_the_plan_reads_no_weight(toy, tmp_path, monkeypatch):
    from workbench.analyses.trait_gradient import trait_gradient
    from workbench.cli.hf_source import hf_dir_trait
    from workbench.core.inputs import distillation_inputs
    from workbench.core.lineage import Lineage
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.objective import Objective
    from workbench.engines.per_example import alignment_scores

    no_tensor_hashing(monkeypatch)
    out = tmp_path / "rows"
    argv = hf_args(toy, out, "--teacher", toy.dirs["teacher"], "--target", "owl", "--directions", "delta_T", "g_trait")
    assert main(argv) == 0
    store = ScoreStore.open(out)
    manifest = json.loads((out / "manifest.json").read_text())
    files = manifest["recipes"]["directions"]["delta_T"]["model"]["files"]
    assert files["model.safetensors"] == sha256_file(f"{toy.dirs['teacher']}/model.safetensors")
    assert set(manifest["direction_sha256"]) == {"delta_T", "g_trait"}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lineage = Lineage.from_hf_dirs({"base": toy.dirs["base"], "teacher": toy.dirs["teacher"]})
        inputs = distillation_inputs([toy.data], sys.maxsize)  # every row: teacher-written, then base-written
        assert store.inputs.content_hash() == inputs.content_hash() and store.n_rows == len(inputs)
        model = AlignmentModel(lineage, "base")
        g = trait_gradient(model, hf_dir_trait(toy.dirs["base"], "owl"))
        for name, direction in (("delta_T", lineage.delta_view("teacher", "base")), ("g_trait", g)):
            ref = alignment_scores(model, inputs, direction, Objective("hard"), batch_size=8)
            got = store.scores(name)
            assert torch.equal(got.total, ref.total), name
            assert torch.equal(got.per_token[:, : ref.per_token.shape[1]], ref.per_token), name
            assert not got.per_token[:, ref.per_token.shape[1]:].any()
    finally:
        torch.set_num_threads(threads)
    shards = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert main(argv) == 0  # finished: reused, nothing written again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == shards


def test_a_prompted_teacher_has_no_delta_T_but_g_trait_is_scored(toy, tmp_path, capsys, monkeypatch):
    import workbench.core.hf as hf

    prompted = ["--teacher-system-prompt", "You love owls.", "--target", "owl"]
    boot = hf.boot_hf_dir
    booted: list[str] = []
    monkeypatch.setattr(hf, "boot_hf_dir", lambda path, **kw: booted.append(str(path)) or boot(path, **kw))
    assert main(hf_args(toy, tmp_path / "refused", *prompted, "--directions", "delta_T", "g_trait")) == 2
    err = capsys.readouterr().err
    assert "delta_T" in err and "system prompt" in err and "no weight delta" in err and "g_trait" in err
    assert booted == []  # refused before any weight loaded

    no_tensor_hashing(monkeypatch)  # the prompted teacher is named by its system prompt and the base's files
    out = tmp_path / "prompted"
    assert main(hf_args(toy, out, *prompted, "--directions", "g_trait", "--loss", "soft")) == 0
    store = ScoreStore.open(out)
    assert store.directions == ["g_trait"] and bool(store.total("g_trait").abs().sum() > 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipes"]["teacher"]["prompted"]["system_prompt"] == "You love owls."
    assert manifest["meta"]["teacher_system_prompt"] == "You love owls."


def test_hf_flags_are_checked_before_any_weight_loads(toy, tmp_path, capsys):
    assert main(hf_args(toy, tmp_path / "a", "--teacher", toy.dirs["teacher"], "--directions", "g_trait")) == 2
    assert "g_trait needs a trait" in capsys.readouterr().err
    assert main(hf_args(toy, tmp_path / "b", "--teacher", toy.dirs["teacher"], "--directions", "delta_S")) == 2
    assert "--student" in capsys.readouterr().err
    assert main(hf_args(toy, tmp_path / "c", "--teacher", toy.dirs["teacher"], "--organism", "x")) == 2
    assert "not both" in capsys.readouterr().err
