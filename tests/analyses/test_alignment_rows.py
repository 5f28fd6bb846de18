"""Streamed per-row alignment scores: equal to the in-memory `alignment_scores`, resumable after a
kill or a damaged shard (only the missing batches are computed again), and a store of other
inputs or settings is refused with the fix named."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from workbench.analyses import alignment_rows
from workbench.analyses.alignment_rows import RowScoresConfig, stream_alignment_scores
from workbench.analyses.score_store import ScoreStore
from workbench.capture import store
from workbench.core.errors import ArtifactError, ChecksumError
from workbench.core.inputs import Inputs
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective
from workbench.engines.per_example import alignment_scores

BATCH = 8


def tree_sha(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(tiny_organism):
    """The tiny organism's base, 29 teacher- and base-written rows (4 batches, the last short), and
    two directions: the teacher delta (lazy) and a random dict over some keys."""
    from workbench.organism.load import load_lineage

    d = tiny_organism.directory
    lin = load_lineage(d, ["base", "teacher"])
    x = Inputs.from_jsonl([d / "data" / "teacher.jsonl", d / "data" / "base.jsonl"])
    rows = x.select(list(range(0, 15)) + list(range(len(x) - 14, len(x))))
    model = AlignmentModel(lin, "base")
    g = torch.Generator().manual_seed(0)
    keys = list(model.params)[:3]
    dirs = {"delta_T": lin.delta_view("teacher", "base"),
            "rand": {k: torch.randn(model.params[k].shape, generator=g) for k in keys}}
    return model, rows, dirs, Objective("hard")


@pytest.fixture(scope="module")
def fresh(setup, tmp_path_factory) -> Path:
    model, rows, dirs, objective = setup
    out = tmp_path_factory.mktemp("fresh") / "scores"
    stream_alignment_scores(model, rows, dirs, objective, out, RowScoresConfig(batch_size=BATCH))
    return out


def test_streamed_scores_equal_the_in_memory_scores_exactly(setup, fresh):
    model, rows, dirs, objective = setup
    s = ScoreStore.open(fresh)
    assert s.directions == ["delta_T", "rand"] and s.n_rows == 29
    assert len(list((fresh / "shards" / "delta_T" / "total").iterdir())) == 4  # one shard per batch
    for name, d in dirs.items():
        ref = alignment_scores(model, rows, d, objective, batch_size=BATCH)
        got = s.scores(name)
        assert torch.equal(got.total, ref.total) and torch.equal(got.per_token, ref.per_token), name
        assert torch.equal(s.per_token(name, slice(5, 20)), ref.per_token[5:20])
    assert s.inputs.content_hash() == rows.content_hash()
    assert ref.total.abs().max() > 0  # a real signal, not zeros


def test_a_killed_run_resumes_computing_only_the_missing_batches(setup, fresh, tmp_path, monkeypatch):
    model, rows, dirs, objective = setup
    out = tmp_path / "scores"
    write, written = store.StoreWriter.write_shard, []

    def write_then_die(self, spec, tensor):
        if len(written) == 6:  # three whole batches (a_{i,t} and a_i each), then a kill
            raise KeyboardInterrupt
        write(self, spec, tensor)
        written.append(spec.path)

    monkeypatch.setattr(store.StoreWriter, "write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        stream_alignment_scores(model, rows, dirs, objective, out, RowScoresConfig(batch_size=BATCH))
    monkeypatch.setattr(store.StoreWriter, "write_shard", write)
    assert not (out / "manifest.json").exists()
    (out / written[0]).unlink()  # batch 0 of delta_T: deleted
    (out / written[3]).write_bytes((out / written[3]).read_bytes()[:40])  # batch 1: torn
    calls = []
    real = alignment_rows.alignment_scores
    monkeypatch.setattr(alignment_rows, "alignment_scores",
                        lambda m, part, *a, **k: calls.append(len(part)) or real(m, part, *a, **k))
    stream_alignment_scores(model, rows, dirs, objective, out, RowScoresConfig(batch_size=BATCH))
    assert len(calls) == 8 - 1  # every batch but batch 2 of delta_T, which survived whole
    assert tree_sha(out) == tree_sha(fresh)
    calls.clear()
    stream_alignment_scores(model, rows, dirs, objective, out, RowScoresConfig(batch_size=BATCH))
    assert calls == []  # a finished store is returned as it is


def test_a_store_of_other_inputs_or_settings_is_refused_naming_the_fix(setup, fresh, tmp_path, monkeypatch):
    model, rows, dirs, objective = setup
    before = tree_sha(fresh)
    with pytest.raises(ArtifactError, match=r"other batch_size than this run's.*--overwrite"):
        stream_alignment_scores(model, rows, dirs, objective, fresh, RowScoresConfig(batch_size=4))
    with pytest.raises(ArtifactError, match=r"other inputs, n_rows"):
        stream_alignment_scores(model, rows.select(list(range(10))), dirs, objective, fresh,
                                RowScoresConfig(batch_size=BATCH))
    with pytest.raises(ArtifactError, match=r"other directions, direction_sha256"):
        stream_alignment_scores(model, rows, {"delta_T": dirs["delta_T"]}, objective, fresh,
                                RowScoresConfig(batch_size=BATCH))
    assert tree_sha(fresh) == before  # untouched; and an interrupted run of another plan is refused too:
    out = tmp_path / "partial"
    monkeypatch.setattr(store.StoreWriter, "finish", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        stream_alignment_scores(model, rows, dirs, objective, out, RowScoresConfig(batch_size=BATCH))
    monkeypatch.undo()
    with pytest.raises(ArtifactError, match="interrupted run .* other inputs or configuration.*--overwrite"):
        stream_alignment_scores(model, rows, dirs, objective, out, RowScoresConfig(batch_size=4))
    s = stream_alignment_scores(model, rows, dirs, objective, out, RowScoresConfig(batch_size=4, overwrite=True))
    assert torch.equal(s.total("delta_T"), alignment_scores(model, rows, dirs["delta_T"], objective, batch_size=4).total)
    assert not list(out.glob(".written*"))


def test_a_damaged_finished_store_is_refused_when_read(fresh, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(fresh, copy)
    shard = next((copy / "shards" / "rand" / "per_token").iterdir())
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")
    s = ScoreStore.open(copy)
    s.total("rand")  # the a_i shards are intact
    with pytest.raises(ChecksumError, match="Delete the store and score again"):
        s.per_token("rand")
    with pytest.raises(ArtifactError, match="not an alignment-score store"):
        (copy / "manifest.json").write_text('{"kind": "activations"}')
        ScoreStore.open(copy)
