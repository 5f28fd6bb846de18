"""The screening defense retrains a student on the tiny organism's screened teacher rows."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.analyses.screening import ScreeningConfig, run_screening
from workbench.analyses.trait_gradient import trait_gradient
from workbench.cli.organism_runs import screen_organism_seed
from workbench.core.inputs import Inputs
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective
from workbench.engines.per_example import alignment_scores
from workbench.organism.load import load_seed


def test_run_screening_drops_top_rows_and_scores_what_retrain_returns(tiny_organism):
    """The analysis with a retrain callable of the caller's: it gets the kept rows, and the
    P(target) of what it returns is recorded."""
    seed = load_seed(tiny_organism.directory, roles=["base", "teacher"], target="owl")
    data = Inputs.from_jsonl(seed.data("teacher"), limit=40)
    seen: list[Inputs] = []

    def retrain(kept: Inputs):
        seen.append(kept)
        return seed.lineage["teacher"]

    config = ScreeningConfig(fractions=(0.25,), channel_ids=seed.channel_ids, seed=3)
    rows = run_screening(seed.lineage, data, seed.trait, retrain, config)
    assert [(r.seed, r.fraction, r.dropped, r.n_kept) for r in rows] == [(3, 0.25, "top_g_trait", 30), (3, 0.25, "random", 30)]
    assert all(r.p_target == pytest.approx(seed.trait.p_target(seed.lineage["teacher"])) for r in rows)
    model = AlignmentModel(seed.lineage)
    ids = torch.tensor(seed.channel_ids)
    scores = alignment_scores(model, data, trait_gradient(model, seed.trait), Objective("hard", ids=ids)).total
    top = set(torch.argsort(scores, descending=True)[:10].tolist())
    kept_rows = {tuple(r) for r in seen[0].tokens.tolist()}
    assert not any(tuple(data.tokens[i].tolist()) in kept_rows for i in top)


def test_screening_retrains_students_on_screened_rows(tiny_organism):
    rows, reference = screen_organism_seed(tiny_organism.directory, fractions=(0.25,), overrides={"student_epochs": 1},
                                           max_rows=256)
    assert [(r.fraction, r.dropped) for r in rows] == [(0.25, "top_g_trait"), (0.25, "random")]
    assert rows[0].n_kept == rows[1].n_kept == reference["n_rows"] - round(0.25 * reference["n_rows"])
    assert all(0 < r.p_target < 1 for r in rows)


def test_screening_result_round_trip_and_rows(tmp_path):
    from workbench.analyses.screening import ScreeningResult, ScreeningRow

    rows = [ScreeningRow(0, 0.1, "top_g_trait", 90, 0.30), ScreeningRow(0, 0.1, "random", 90, 0.50),
            ScreeningRow(0, 0.25, "top_g_trait", 75, 0.45), ScreeningRow(0, 0.25, "random", 75, 0.40)]
    result = ScreeningResult(rows, {"student": 0.6, "control": 0.1, "base": 0.1, "n_rows": 100, "mode": "hard"})
    result.save(tmp_path)
    again = ScreeningResult.load(tmp_path)
    assert again.rows == rows and again.reference == result.reference
    summary = again.summary_rows()
    # transfer removed by the screen (0.6 - top) beside a random drop of the same size (0.6 - random)
    assert [(r.group, round(r.value, 6), round(r.control_value, 6), r.clears) for r in summary] == [
        ("drop 10%", 0.3, 0.1, True), ("drop 25%", 0.15, 0.2, False)]
    assert set(again.figures()) == {"bars"}


def test_summarize_seeds_differences_over_seeds():
    from workbench.analyses.screening import ScreeningResult, ScreeningRow, screening_over_seeds

    ref = {"student": 0.6, "control": 0.1, "base": 0.1, "n_rows": 100, "mode": "hard"}
    results = [ScreeningResult([ScreeningRow(s, 0.1, "top_g_trait", 90, top), ScreeningRow(s, 0.1, "random", 90, rnd)], ref)
               for s, (top, rnd) in enumerate([(0.3, 0.5), (0.4, 0.5)])]
    (row,) = screening_over_seeds(results)
    assert row["top_g_trait"] == [0.3, 0.4] and row["random"] == [0.5, 0.5]
    assert row["difference_mean"] == pytest.approx(-0.15) and row["difference_sd"] == pytest.approx(0.1 / 2**0.5)


def test_screening_cli_writes_seeds_and_summary(tiny_organism, tmp_path, capsys):
    from workbench.analyses.screening import ScreeningResult
    from workbench.cli.screening import main

    organism = tiny_organism.directory.parent
    out = tmp_path / "screen"
    assert main(["--organism", str(organism), "--seeds", "0", "--fractions", "0.25", "--student-epochs", "1",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["fraction"] for r in summary["rows"]] == [0.25] and len(summary["rows"][0]["difference"]) == 1
    assert len(ScreeningResult.load(out / "seed0").rows) == 2 and (out / "seed0" / "screening_bars.html").exists()
    assert "top - random" in capsys.readouterr().out
    assert main(["--organism", str(tmp_path / "missing"), "--seeds", "0", "--out", str(out)]) == 2


def test_screening_drops_rows_from_those_the_student_trained_on(tiny_organism, tmp_path):
    # a seed whose student saw fewer rows than its teacher kept (the equal row count binding on the teacher)
    import json
    import shutil

    seed_dir = tmp_path / "seed0"
    shutil.copytree(tiny_organism.directory, seed_dir)
    manifest = json.loads((seed_dir / "manifest.json").read_text())
    assert manifest["filter"]["teacher"]["kept"] > 200
    manifest["student_rows"]["student"] = 200
    (seed_dir / "manifest.json").write_text(json.dumps(manifest))
    rows, reference = screen_organism_seed(seed_dir, fractions=(0.25,), overrides={"student_epochs": 1})
    assert reference["n_rows"] == 200 and rows[0].n_kept == 150
