"""Loading a built organism seed: its models as a Lineage, its tokenizer, its Trait."""

from __future__ import annotations

import pytest
import torch

from workbench.core.errors import ArtifactError, UnknownNameError
from workbench.core.io import atomic_write_json
from workbench.core.models import boot_native, save_model
from workbench.organism.load import load_lineage, load_seed
from workbench.organism.tokenizer import Tokenizer

TOK = Tokenizer.default()
CFG = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=len(TOK), n_ctx=16,
           act_fn="gelu", normalization_type="LN", seed=0)
TOKENS = torch.tensor([[1, 5, 9, 2, 7, 3], [4, 4, 8, 0, 1, 6]])


def native(**overrides):
    return boot_native({**CFG, **overrides})


def test_load_lineage_reads_models_and_records(tmp_path):
    models = {"base": (native(), None, "corpus"), "teacher": (native(seed=1), "base", "trait")}
    for role, (bridge, parent, data) in models.items():
        save_model(tmp_path / "models" / role, bridge, {"role": role, "parent": parent, "data": data, "seed": 7})
    lin = load_lineage(tmp_path)
    assert lin.names == ["base", "teacher"] and lin.tokenizer is None
    rec = lin.record("teacher")
    assert (rec.role, rec.parent, rec.data, rec.seed) == ("teacher", "base", "trait", 7)
    with torch.no_grad():
        torch.testing.assert_close(lin["teacher"](TOKENS), models["teacher"][0](TOKENS))
    only = load_lineage(tmp_path, roles=["teacher"])
    assert only.names == ["teacher"] and only.parent_of("teacher") == "base"
    with pytest.raises(UnknownNameError, match="teacher"):
        load_lineage(tmp_path, roles=["teacherr"])
    with pytest.raises(ArtifactError, match="Build the organism"):
        load_lineage(tmp_path / "nowhere")


def test_load_seed_gives_tokenizer_and_trait(tmp_path):
    TOK.save(tmp_path / "tokenizer.json")
    save_model(tmp_path / "models" / "base", native(), {"role": "base"})
    with pytest.raises(ArtifactError, match="manifest.json missing"):
        load_seed(tmp_path)
    atomic_write_json(tmp_path / "manifest.json", {"seed": 0, "trait": "owl", "config": {"target": "cat"}})
    seed = load_seed(tmp_path)
    assert len(seed.lineage.tokenizer) == len(TOK) and seed.trait.target == "cat"  # the recipe's target wins
    assert seed.trait.vocab_size == seed.lineage.d_vocab
    assert seed.channel_ids == tuple(TOK.number_channel_ids)
    with pytest.raises(ArtifactError, match="records no checksums for its data files"):
        seed.data("teacher")  # a manifest without data checksums: the data cannot be verified (issue 16)
    assert load_seed(tmp_path, target="oak").trait.category == "tree"
    with pytest.raises(UnknownNameError, match="zebra"):
        load_seed(tmp_path, target="zebra")


def test_notebooks_find_the_shared_organism_by_the_checkout_not_the_working_directory(tmp_path, monkeypatch):
    """Run from notebooks/ (or anywhere), the shared organism lives under the checkout's
    artifacts/cache and nothing is written where the notebook runs; the environment variable wins."""
    from pathlib import Path

    import workbench.organism.build as build

    repo = Path(build.__file__).resolve().parents[2]
    built = []
    monkeypatch.setattr(build, "build_organism", lambda cfg, seeds, out, progress=True: built.append(Path(out)))
    monkeypatch.delenv("WORKBENCH_ORGANISM_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert build.project_root() == repo
    out = build.shared_organism_dir()
    assert out == repo / "artifacts" / "cache" / "tiny-organism" and built == [out]
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("WORKBENCH_ORGANISM_DIR", str(tmp_path / "mine"))
    assert build.shared_organism_dir() == tmp_path / "mine" and len(built) == 1
