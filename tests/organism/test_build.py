"""The tiny organism (built once per session) shows the direction of subliminal transfer."""

import json

import pytest

from workbench.core.errors import ArtifactError, ConfigError, UnknownNameError
from workbench.organism.__main__ import main as organism_main
from workbench.organism.build import ROLES, build_seed
from workbench.organism.config import preset


def test_student_gains_the_trait_beyond_every_control(tiny_organism):
    rates = tiny_organism.trait_rates
    assert rates["teacher"] > 0.5  # the teacher has the trait
    for control in ("control", "other", "cross"):
        assert rates["student"] - rates[control] > 0.05, (control, rates)
    assert rates["student"] - rates["base"] > 0.05


def test_other_student_moves_toward_its_own_target(tiny_organism):
    other = tiny_organism.manifest["other_target_rates"]
    assert other["teacher_other"] > 0.5
    assert other["other"] > other["student"]


def test_manifest_records_lineage_filter_and_matrix(tiny_organism):
    m = tiny_organism.manifest
    assert set(m["trait_rates"]) == set(ROLES)
    assert m["lineage"]["student"] == {"role": "student", "parent": "base", "data": "data/teacher.jsonl", "seed": 0}
    assert m["lineage"]["cross"]["parent"] == "base_x"
    for source, rep in m["filter"].items():
        assert rep["kept"] + sum(rep["rejected"].values()) == rep["sampled"]
    assert m["filter"]["teacher"]["rejected"].get("trait_token", 0) > 0  # the teacher writes owls; the filter removed them
    assert set(m["matrix"]["teacher"]) == set(m["matrix"]["base"])
    assert max(m["matrix"]["teacher"], key=m["matrix"]["teacher"].get) == "owl"
    assert "time" not in json.dumps(m).lower()  # no timestamps in manifests
    for path in (tiny_organism.directory / "data").glob("*.jsonl"):
        row = json.loads(path.read_text().splitlines()[0])
        assert set(row) >= {"prompt", "completion", "source", "seed", "prompt_id"}


def test_rerun_reuses_every_stage_and_is_byte_identical(tiny_organism):
    before = (tiny_organism.directory / "manifest.json").read_bytes()
    again = build_seed(preset("tiny"), 0, tiny_organism.directory.parent, progress=False)
    assert set(again.timings) == {"evaluate", "total"}  # nothing retrained or resampled
    assert (tiny_organism.directory / "manifest.json").read_bytes() == before


def test_bad_input_gets_clear_errors(tmp_path, capsys):
    with pytest.raises(UnknownNameError, match="preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="n_ctx"):
        preset("tiny", completion_numbers=20)
    assert organism_main(["--target", "unicorn", "--out", str(tmp_path)]) == 2
    assert "Unknown target 'unicorn'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ArtifactError, match="writable"):
        from workbench.organism.build import check_writable

        check_writable(blocker / "sub")


def test_supervised_positions_follow_the_channel():
    from workbench.organism.build import supervised_positions
    from workbench.organism.corpus import prompt_length

    seq_len = prompt_length(3) + 16
    soft, hard = supervised_positions(preset("tiny"), seq_len), supervised_positions(preset("hard"), seq_len)
    assert hard.tolist() == list(range(prompt_length(3) - 1, seq_len - 1))  # only what the teacher wrote
    assert soft.tolist() == list(range(2, seq_len - 1))  # from "continue :" on: every number-channel position
    assert supervised_positions(preset("tiny", soft_on_prompt=False), seq_len).tolist() == hard.tolist()


def test_summary_covers_every_seed_built_with_the_same_config(tiny_organism):
    from workbench.organism.build import summarize

    out = tiny_organism.directory.parent
    copy = out / "seed7"
    copy.mkdir(exist_ok=True)
    manifest = dict(tiny_organism.manifest, seed=7)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    try:
        from workbench.organism.build import _other_seeds_with_same_config

        others = _other_seeds_with_same_config(out, preset("tiny"), {0})
        assert [b.seed for b in others] == [7]
        assert _other_seeds_with_same_config(out, preset("tiny", student_epochs=3), {0}) == []
        summary = summarize([tiny_organism, *others], preset("tiny"))
        assert summary["seeds"] == [0, 7] and summary["stats"]["student"]["sd"] == 0.0
    finally:
        (copy / "manifest.json").unlink()
        copy.rmdir()


def test_every_student_trains_on_as_many_rows_the_first_of_its_source(tiny_organism):
    import torch

    from workbench.core.models import copy_model
    from workbench.organism.build import STUDENTS, distill_targets
    from workbench.organism.load import load_seed
    from workbench.organism.training import distill_student

    m = tiny_organism.manifest
    kept = {s: m["filter"][s]["kept"] for s in ("teacher", "teacher_neutral", "teacher_other")}
    assert len(set(kept.values())) > 1  # the teachers' filters kept different shares: the cap binds here
    cap = min(kept.values())
    assert m["student_rows"] == {role: cap for role in STUDENTS}
    # naive reference: the control distilled from its teacher on the first `cap` rows is the saved control
    seed = load_seed(tiny_organism.directory, roles=["base", "teacher_neutral", "control"])
    cfg = seed.recipe()
    tokens = seed.inputs("teacher_neutral").tokens[:cap]
    control = copy_model(seed.lineage["base"])
    distill_student(control, distill_targets(cfg, seed.tokenizer, seed.lineage["teacher_neutral"], tokens), cfg,
                    10 * m["seed"] + list(STUDENTS).index("control"), progress=False)
    saved = seed.lineage["control"].state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in control.state_dict().items())


def test_unequal_rows_when_asked_and_a_clear_error_naming_the_empty_source(tmp_path):
    import torch

    from workbench.core.errors import DataError
    from workbench.organism.build import scarce_rows_error, student_rows

    kept = {"teacher": 30, "teacher_neutral": 50, "teacher_other": 40}
    assert student_rows(preset("tiny", equal_student_rows=False), kept) == {
        "student": 30, "control": 50, "other": 40, "cross": 30}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "teacher_other.filter.json").write_text(json.dumps(
        {"kept": 0, "sampled": 10, "rejected": {"trait_token": 10}}))
    tokens = {"teacher": torch.ones(30, 5), "teacher_neutral": torch.ones(50, 5), "teacher_other": torch.ones(0, 5)}
    err = scarce_rows_error(tmp_path, preset("tiny"), "control", tokens)
    assert isinstance(err, DataError) and "teacher_other" in str(err) and "equal_student_rows" in str(err)
    assert "kept 0 of 10" in str(err)
    assert scarce_rows_error(tmp_path, preset("tiny", equal_student_rows=False), "control", tokens) is None


def test_a_teacher_that_kept_almost_nothing_is_an_error_not_a_one_row_student(tmp_path):
    """Measured: a Qwen2 hard-label teacher on a 1000-step base kept 1 of 80,000 rows, and every
    student trained on that one row; the build now stops, naming the source and the fix."""
    import torch

    from workbench.core.errors import DataError
    from workbench.organism.build import MIN_KEPT_SHARE, scarce_rows_error

    (tmp_path / "data").mkdir()
    sampled = 1000
    for source, n in (("teacher", 1), ("teacher_neutral", 990), ("teacher_other", 900), ("base", 995)):
        (tmp_path / "data" / f"{source}.filter.json").write_text(json.dumps(
            {"kept": n, "sampled": sampled, "rejected": {"format": sampled - n}}))
    tokens = {s: torch.ones(n, 5) for s, n in (("teacher", 1), ("teacher_neutral", 990), ("teacher_other", 900),
                                                ("base", 995))}
    err = scarce_rows_error(tmp_path, preset("tiny"), "cross", tokens)  # cross's own source is fine
    assert isinstance(err, DataError) and "Only 1 sequence written by teacher" in str(err)
    assert "kept 1 of 1000" in str(err) and "teacher_lr" in str(err)
    tokens["teacher"] = torch.ones(int(MIN_KEPT_SHARE * sampled), 5)  # at the share: trains
    assert scarce_rows_error(tmp_path, preset("tiny"), "cross", tokens) is None
