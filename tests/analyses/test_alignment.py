"""run_alignment on the tiny organism: the result contract, the oracle, path completeness, errors."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.alignment import AlignmentConfig, run_alignment, screen_rows
from workbench.analyses.alignment_result import AlignmentResult
from workbench.analyses.alignment_seeds import group_figure_over_seeds, detection_over_seeds
from workbench.analyses.alignment_stats import auroc
from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.organism.load import load_seed

SMALL = dict(max_rows_per_source=32, n_random=2, path_points=(1, 4), path_group_points=2, etas=(1e-4, 1e-2),
             prediction_batches=1, prediction_batch_size=16, batch_size=64, grad_batch_size=64)


@pytest.fixture(scope="module")
def seed(tiny_organism):
    return load_seed(tiny_organism.directory, roles=["base", "teacher", "student"], target="owl")


@pytest.fixture(scope="module")
def lineage(seed):
    return seed.lineage


@pytest.fixture(scope="module")
def inputs(tiny_organism):
    data = tiny_organism.directory / "data"
    return Inputs.from_jsonl([data / "teacher.jsonl", data / "base.jsonl"])


@pytest.fixture(scope="module")
def hard_result(lineage, inputs, seed):
    return run_alignment(lineage, inputs, AlignmentConfig(loss="hard", **SMALL), seed.trait)


def test_hard_result_tables(hard_result, lineage):
    r = hard_result
    directions = [row["direction"] for row in r.detection]
    assert directions[:4] == ["delta_T", "g_trait", "g_trait_no_unembed", "delta_S"]
    assert {"random_0", "random_1", "log p_T/p_base (oracle)", "bag of tokens"} <= set(directions)
    assert r.meta["n_positive"] == r.meta["n_negative"] == 32
    assert r.meta["jvp_vs_group_sum_rel_gap"] < 1e-4  # jvp totals = sum of per-group scores (float32)
    # hard loss: the path integral of the teacher delta is the exact log-likelihood ratio
    assert r.path["K"] == [1, 4] and r.path["completeness_rel_error"][-1] < 0.01
    oracle = r.scores["oracle_log_ratio"]
    assert auroc(r.scores["path/delta_T/K4"], r.scores["labels"]) == pytest.approx(auroc(oracle, r.scores["labels"]), abs=0.01)
    assert r.path["k_reaches_oracle"] in (1, 4)
    # the oracle separates teacher- from base-written text on the tiny organism
    assert r.detection_row("log p_T/p_base (oracle)")["auroc"] > 0.7
    # per-group and per-token tables have the right shapes; the frozen unembedding gets nothing from delta_T
    assert r.groups == [g.name for g in lineage.groups()]
    assert all(len(v) == len(r.groups) for v in r.group_diff.values())
    assert r.group_diff["delta_T"][r.groups.index("unembed")] == 0.0
    per_group = r.scores["groups/delta_T"]
    assert torch.allclose(per_group.sum(-1), r.scores["a/delta_T"])  # groups sum to a_i
    assert r.group_mean["delta_T"] == pytest.approx(per_group[r.scores["labels"].bool()].double().mean(0).tolist())
    assert all(len(v) == len(r.positions) for v in (*r.token_diff.values(), *r.token_reference.values()))
    assert [p["eta"] for p in r.prediction] == [1e-4, 1e-2]
    # per-token teacher-delta alignment tracks the per-token log-likelihood ratio it approximates
    assert r.token_correlation["delta_T"] > 0.3
    ratios = [row["mean_log_ratio"] for row in r.token_table]
    assert ratios == sorted(ratios, reverse=True) and all(row["count"] >= 5 for row in r.token_table)
    assert r.prediction[0]["relative_error"] < 0.05 and r.prediction[0]["sign_agreement"] == 1.0


def test_result_round_trip_figures_and_summary(hard_result, tmp_path):
    hard_result.save(tmp_path)
    loaded = AlignmentResult.load(tmp_path)
    assert loaded.detection == hard_result.detection and loaded.group_diff == hard_result.group_diff
    assert torch.equal(loaded.scores["a/delta_T"], hard_result.scores["a/delta_T"])
    assert set(loaded.figures()) == {"detection", "groups", "tokens", "prediction"}
    rows = [r.to_dict() for r in loaded.summary_rows()]
    delta = next(row for row in rows if row.get("direction") == "delta_T" and row["where"] == "whole model")
    rand = [r["auroc"] for r in hard_result.detection if r["kind"] == "random"]
    assert delta["value"] == hard_result.detection_row("delta_T")["auroc"] and delta["control_value"] == max(rand)
    assert delta["oracle"] is not None and delta["bag_of_tokens"] is not None
    per_group = [row for row in rows if row["where"] in hard_result.groups]
    assert [row["where"] for row in per_group] == hard_result.groups  # one row per parameter group
    main = per_group[0]["direction"]
    assert main.startswith("delta_T (path")
    assert [row["value"] for row in per_group] == hard_result.group_diff[main]
    assert [row["control_value"] for row in per_group] == hard_result.group_diff["random (mean |diff|)"]
    table = detection_over_seeds([loaded, hard_result])
    assert next(row for row in table if row["direction"] == "delta_T")["sd"] == 0.0
    assert group_figure_over_seeds([loaded, hard_result], "delta_T").data


def test_soft_loss_and_user_direction(lineage, inputs, seed):
    lineage = Lineage.from_models({n: lineage[n] for n in ("base", "teacher")}, tokenizer=lineage.tokenizer)
    user = {k: torch.zeros_like(v) for k, v in lineage.params("base").items()}
    user["blocks.0.mlp.out.bias"] = torch.ones_like(user["blocks.0.mlp.out.bias"])
    cfg = AlignmentConfig(loss="soft", channel_ids=seed.channel_ids,
                          **{**SMALL, "path_group_points": 0, "n_random": 1, "max_rows_per_source": 16,
                             "path_points": (2,), "prediction_batches": 0})
    r = run_alignment(lineage, inputs, cfg, seed.trait, directions={"mlp_out_bias": user})
    row = r.detection_row("mlp_out_bias")
    assert row["kind"] == "direction"
    nonzero = [g for g, v in zip(r.groups, r.group_diff["mlp_out_bias"]) if v != 0.0]
    assert nonzero == ["blocks.0.mlp.out"]  # a user direction in one group is scored in that group only
    assert r.path["completeness_rel_error"] is None  # only defined for the hard loss
    assert "soft loss" in r.meta["channel_note"] and r.prediction == []
    assert AlignmentConfig.from_dict(cfg.to_dict()) == cfg  # channel ids survive the round trip as a tuple


def test_without_a_trait_g_trait_and_the_prediction_are_left_out(lineage, inputs):
    cfg = AlignmentConfig(loss="hard", **{**SMALL, "path_group_points": 0, "n_random": 1, "max_rows_per_source": 16,
                                          "path_points": (1,)})
    r = run_alignment(lineage, inputs, cfg)
    directions = [row["direction"] for row in r.detection]
    assert "delta_T" in directions and not any(d.startswith("g_trait") for d in directions)
    assert r.prediction == [] and r.meta["target"] is None


def test_errors(lineage, inputs):
    with pytest.raises(DataError, match="source 'nobody'"):
        run_alignment(lineage, inputs, AlignmentConfig(positive="nobody", **SMALL))
    with pytest.raises(ConfigError, match="loss"):
        run_alignment(lineage, inputs, AlignmentConfig(loss="medium", **SMALL))
    with pytest.raises(ConfigError, match="channel_ids"):
        run_alignment(lineage, inputs, AlignmentConfig(hard_renormalised=True, **SMALL))
    only_base = Lineage.from_models({"base": lineage["base"]}, tokenizer=lineage.tokenizer)
    with pytest.raises(ConfigError, match="soft loss needs the teacher"):
        run_alignment(only_base, inputs, AlignmentConfig(loss="soft", **SMALL))


def test_screen_rows_drops_the_top_fraction_or_a_random_one():
    scores = torch.tensor([0.1, 5.0, -1.0, 3.0, 0.0, 2.0, 1.0, 4.0, -2.0, 0.5])
    top, rand = screen_rows(scores, 0.3, seed=0)
    assert top == [0, 2, 4, 5, 6, 8, 9]  # rows 1, 7, 3 (the three highest) dropped
    assert len(rand) == 7 and rand != top and rand == sorted(set(rand))
    with pytest.raises(ConfigError, match="fraction"):
        screen_rows(scores, 1.5)
