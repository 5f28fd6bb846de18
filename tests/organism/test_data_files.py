"""A seed's data files carry a sha256 and row count in its manifest, verified before any read:
a teacher.jsonl cut at a line boundary is an error, not an analysis on the rows left (issue 16)."""

from __future__ import annotations

import json
import shutil

import pytest

from workbench.core.errors import ArtifactError, ChecksumError, ConfigError
from workbench.organism.build import build_organism
from workbench.organism.config import preset
from workbench.organism.data_files import DATA_KEY, count_rows, upgrade_organism
from workbench.organism.load import load_seed


@pytest.fixture
def seed(tiny_organism, tmp_path):
    """A private copy of the tiny organism's seed 0 (the shared cache is never changed)."""
    dst = tmp_path / "org" / "seed0"
    shutil.copytree(tiny_organism.directory, dst)
    return dst


def cut(path, keep: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:keep]))


def drop_records(seed_dir) -> None:
    path = seed_dir / "manifest.json"
    m = json.loads(path.read_text())
    del m[DATA_KEY]
    path.write_text(json.dumps(m))


def test_build_records_every_data_file_with_rows_matching_the_filter(seed):
    m = json.loads((seed / "manifest.json").read_text())
    assert set(m[DATA_KEY]) == set(m["filter"])
    for source, rec in m[DATA_KEY].items():
        assert rec["file"] == f"data/{source}.jsonl" and len(rec["sha256"]) == 64
        assert rec["rows"] == m["filter"][source]["kept"] == count_rows(seed / rec["file"])


def test_teacher_data_cut_at_a_line_boundary_is_a_checksum_error(seed):
    n = count_rows(seed / "data/teacher.jsonl")
    cut(seed / "data/teacher.jsonl", 60)
    s = load_seed(seed)
    with pytest.raises(ChecksumError, match=rf"teacher.jsonl has 60 rows .*recorded {n} rows.*Rebuild the seed"):
        s.inputs("teacher")
    s.inputs("base")  # an intact file still reads


def test_rebuild_samples_a_cut_data_file_again(seed):
    original = (seed / "data/teacher.jsonl").read_bytes()
    cut(seed / "data/teacher.jsonl", 60)
    build_organism(preset("tiny"), [0], seed.parent, progress=False)
    assert (seed / "data/teacher.jsonl").read_bytes() == original
    assert len(load_seed(seed).inputs("teacher")) == count_rows(seed / "data/teacher.jsonl")


def test_old_manifest_without_checksums_names_the_upgrade_which_checks_row_counts(seed):
    drop_records(seed)
    with pytest.raises(ArtifactError, match=r"records no checksums .*python -m workbench.organism upgrade"):
        load_seed(seed).data("teacher")
    assert upgrade_organism(seed.parent) == [seed]
    assert upgrade_organism(seed.parent) == []
    load_seed(seed).inputs("teacher")
    drop_records(seed)
    cut(seed / "data/base.jsonl", 10)
    with pytest.raises(ChecksumError, match=r"base.jsonl has 10 rows but the build kept"):
        upgrade_organism(seed.parent)
    assert DATA_KEY not in json.loads((seed / "manifest.json").read_text())  # nothing blessed


@pytest.mark.parametrize("limit", [0, -5])
def test_a_row_limit_below_one_is_refused(seed, limit):
    with pytest.raises(ConfigError, match=f"limit={limit}"):
        load_seed(seed).inputs("teacher", limit=limit)
