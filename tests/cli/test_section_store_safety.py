"""Saved report sections are never written or deleted through a symlink (issue 16)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import pytest

from workbench.cli.section_store import KEY_FILE, SectionStore, section_key
from workbench.core.errors import ArtifactError
from workbench.results.base import ResultBase


@dataclass
class Note(ResultBase):
    kind: ClassVar[str] = "note"
    title: ClassVar[str] = "a note"
    command: str
    value: float


@pytest.mark.parametrize("link", ["root", "section"])
def test_symlinked_section_folder_is_refused_and_the_target_untouched(tmp_path, link):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / KEY_FILE).write_text("someone else's")
    root = tmp_path / "out" / "sections"
    if link == "root":
        root.parent.mkdir()
        os.symlink(elsewhere, root)
    else:
        root.mkdir(parents=True)
        os.symlink(elsewhere, root / "weights")
    key = section_key("weights", inputs_hash="x", models={}, reads={})
    with pytest.raises(ArtifactError, match="is a symlink"):
        SectionStore(root).save("weights", Note(command="c", value=1.0), key)
    assert (elsewhere / KEY_FILE).read_text() == "someone else's"
    assert sorted(p.name for p in elsewhere.iterdir()) == [KEY_FILE]


def test_real_section_folder_saves_and_reloads(tmp_path):
    key = section_key("weights", inputs_hash="x", models={}, reads={})
    store = SectionStore(tmp_path / "sections")
    path = store.save("weights", Note(command="c", value=1.0), key)
    assert path.is_file() and (tmp_path / "sections" / "weights" / KEY_FILE).is_file()
