"""The sweep's paired contrasts recover effects planted in per-seed gains: the optimiser gap, LoRA
over full fine-tuning, the slope over log2(rank) and an inverted U's curvature, each within seeds
first (a seed-wide offset cancels) and against a naive reference; diverged cells drop out; the
table marks a rate grid whose losses tie."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.organism.sweep_contrasts import contrasts, format_contrasts, rank_fit
from workbench.results.seeds import t_quantile

SEEDS = [0, 1, 2]
RANKS = [1, 2, 4, 8, 16, 64]
SEED_OFFSET = {0: 0.9, 1: -0.4, 2: 0.3}  # what a weak or strong seed adds to every regime


def entry(optimizer: str, r: int | None, gains: list[float | None], organism: str = "soft-dir") -> dict:
    regime = {"students": "full" if r is None else "lora", "r": r, "optimizer": optimizer}
    label = ("full" if r is None else f"LoRA r={r}") + f", {optimizer}"
    return {"organism": organism, "channel": "soft", "regime": regime, "label": label, "seeds": SEEDS, "gain": gains}


def planted(optimizer: str, full: float, per_rank, noise: float = 0.0, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    shapes = [None, *RANKS]
    return [entry(optimizer, r, [(full if r is None else per_rank(r)) + SEED_OFFSET[s] + noise * rng.normal()
                                 for s in SEEDS]) for r in shapes]


def by_label(rows: list[dict]) -> dict[str, dict]:
    return {r["label"]: r for r in rows}


def test_planted_slope_optimiser_gap_and_lora_over_full_are_recovered_exactly():
    summary = (planted("adamw", 0.2, lambda r: 0.5 + 0.3 * np.log2(r))
               + planted("sgd", 0.1, lambda r: 0.4))
    rows = by_label(contrasts(summary))
    slope = rows["adamw: per doubling of r"]
    assert slope["per_seed"] == pytest.approx([0.3] * 3) and slope["mean"] == pytest.approx(0.3)
    assert rows["adamw: log2(r)^2"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert rows["sgd: per doubling of r"]["mean"] == pytest.approx(0.0, abs=1e-9)
    # LoRA minus full: the mean over ranks of 0.5 + 0.3 log2 r, less 0.2; the seed offsets cancel
    lora_mean = np.mean([0.5 + 0.3 * np.log2(r) for r in RANKS])
    assert rows["adamw: LoRA - full"]["per_seed"] == pytest.approx([lora_mean - 0.2] * 3)
    gap = np.mean([0.2 - 0.1] + [0.5 + 0.3 * np.log2(r) - 0.4 for r in RANKS])
    assert rows["adamw - sgd"]["per_seed"] == pytest.approx([gap] * 3)
    assert all(r["ci"][0] == pytest.approx(r["ci"][1]) for r in rows.values())  # no spread over seeds


def test_an_inverted_u_over_rank_has_negative_curvature_and_its_interval_is_the_seeds_t_interval():
    summary = planted("adamw", 0.0, lambda r: 1.0 + 0.8 * np.log2(r) - 0.15 * np.log2(r) ** 2, noise=0.05, seed=3)
    rows = by_label(contrasts(summary))
    curvature = rows["adamw: log2(r)^2"]
    assert curvature["mean"] == pytest.approx(-0.15, abs=0.03) and curvature["ci"][1] < 0
    # the planted peak: d/dx (0.8 x - 0.15 x^2) = 0 at x = 8/3, r = 2^(8/3) = 6.35, inside 1-64
    assert all(p == pytest.approx(2 ** (8 / 3), rel=0.3) for p in curvature["peak_rank"])
    # naive reference: numpy's quadratic fit per seed, then mean +- t sd / sqrt(n)
    x = np.log2(RANKS)
    naive = [np.polyfit(x, [e["gain"][s] for e in summary[1:]], 2)[0] for s in range(3)]
    assert curvature["per_seed"] == pytest.approx(naive)
    half = t_quantile(2) * np.std(naive, ddof=1) / np.sqrt(3)
    assert curvature["ci"] == pytest.approx((np.mean(naive) - half, np.mean(naive) + half))
    assert "*" in format_contrasts(contrasts(summary))


def test_a_diverged_cell_leaves_its_shape_out_of_every_seed_of_the_contrast():
    summary = planted("adamw", 0.2, lambda r: 0.3 * np.log2(r)) + planted("sgd", 0.0, lambda r: 0.0)
    summary[3]["gain"][1] = None  # adamw r=4 diverged on seed 1
    rows = by_label(contrasts(summary))
    slope = rows["adamw: per doubling of r"]
    assert slope["per_seed"] == pytest.approx([0.3] * 3) and slope["left_out"] == ["r=4"]
    gap = rows["adamw - sgd"]
    keep = [0.2] + [0.3 * np.log2(r) for r in RANKS if r != 4]
    assert gap["per_seed"] == pytest.approx([np.mean(keep)] * 3)  # every seed averages the same six shapes
    assert gap["shapes"] == ["full", "r=1", "r=2", "r=8", "r=16", "r=64"]
    assert rows["sgd: per doubling of r"]["left_out"] == []  # sgd's r=4 trained: its own contrasts keep it
    summary[0]["gain"][2] = float("nan")  # adamw full diverged on seed 2: no LoRA - full for adamw
    assert "adamw: LoRA - full" not in by_label(contrasts(summary))
    assert "left out r=4" in format_contrasts(contrasts(summary))


def test_a_student_that_did_not_fit_measures_no_transfer():
    """A seed the summary marks unfit (its student ended far above the regime's other seeds' loss)
    leaves that shape out like a diverged cell; with every shape out the row still says so."""
    summary = planted("adamw", 0.2, lambda r: 0.3 * np.log2(r)) + planted("sgd", 0.0, lambda r: 0.0)
    for e in summary[7:]:
        e["unfit_seeds"] = [1]  # every sgd student of seed 1 failed to fit
    summary[1]["unfit_seeds"] = [2]  # and adamw r=1 on seed 2
    rows = by_label(contrasts(summary))
    gap = rows["adamw - sgd"]
    assert gap["per_seed"] == [None, None, None] and gap["mean"] is None and gap["shapes"] == []
    assert rows["adamw: per doubling of r"]["left_out"] == ["r=1"]
    assert "sgd: per doubling of r" not in rows  # no sgd rank is complete
    assert "adamw - sgd (left out full, r=1,2,4,8,16,64)" in format_contrasts(contrasts(summary))


def test_unfit_seeds_are_the_students_far_above_the_regimes_best_loss():
    from workbench.organism.sweep_summary import format_table, summarize, unfit_seeds

    assert unfit_seeds([0, 1, 2], [5.3e-5, 7.6e-3, 1.7e-3]) == [1]  # 143x and 32x the best: only seed 1
    assert unfit_seeds([0, 1, 2], [None, float("nan"), 0.5]) == []  # one finite loss: nothing to compare
    assert unfit_seeds([0, 1, 2], [0.0, 0.1, 0.2]) == []  # a zero loss gives no scale
    role = {"log_odds": 0.0, "p_target": 0.1, "wilson": [0.05, 0.15], "trained": True, "cos_teacher": {"whole": 0.0}}
    rows = [{"organism": "o", "channel": "soft", "regime": {"students": "lora", "r": 8, "optimizer": "sgd"},
             "label": "LoRA r=8, sgd", "seed": s, "lr": 1.0, "lr_losses": {"1": 1e-5},
             "student": {**role, "final_loss": loss}, "control": {**role, "final_loss": 1e-6}}
            for s, loss in ((0, 2e-4), (1, 0.83), (2, 3e-4))]
    (entry_,) = summarize(rows)
    assert entry_["unfit_seeds"] == [1] and "LoRA r=8, sgd (unfit: seed 1)" in format_table([entry_])


def test_optimisers_are_compared_on_the_shapes_both_ran_only():
    summary = planted("adamw", 0.2, lambda r: 0.3 * np.log2(r)) + [entry("sgd", 8, [0.0, 0.0, 0.0]),
                                                                 entry("sgd", None, [0.1, 0.1, 0.1])]
    gap = by_label(contrasts(summary))["adamw - sgd"]
    # only full and r=8: (0.2 - 0.1 + 0.9 - 0.0) / 2 plus the seed offset, which sgd's entries lack
    assert gap["shapes"] == ["full", "r=8"]
    assert gap["per_seed"] == pytest.approx([(0.1 + 0.9) / 2 + SEED_OFFSET[s] for s in SEEDS])


def test_two_organisms_of_one_channel_are_named_apart():
    soft_a = [entry("adamw", 8, [1.0, 1.1, 0.9], organism="/runs/a"), entry("adamw", None, [0.5, 0.5, 0.5], organism="/runs/a")]
    soft_b = [entry("adamw", 8, [0.0, 0.1, 0.2], organism="/runs/b"), entry("adamw", None, [0.5, 0.5, 0.5], organism="/runs/b")]
    rows = contrasts(soft_a + soft_b)
    assert [r["organism"] for r in rows] == ["/runs/a", "/runs/b"]
    text = format_contrasts(rows)
    assert "soft (a)" in text and "soft (b)" in text


def test_channels_are_contrasted_apart_and_missing_shapes_give_no_row():
    soft = [entry("adamw", 8, [1.0, 1.0, 1.0]), entry("adamw", None, [0.5, 0.5, 0.5])]
    hard = [entry("adamw", 8, [0.2, 0.3, 0.4], organism="hard-dir")]
    rows = contrasts(soft + hard)
    assert [(r["channel"], r["question"]) for r in rows] == [("soft", "full vs LoRA")]  # one rank: no slope
    assert rows[0]["per_seed"] == [0.5, 0.5, 0.5]
    assert contrasts([]) == [] and format_contrasts([]) == ""


def test_rank_fit_is_numpys_least_squares():
    assert rank_fit([1, 4, 16], [0.0, 1.0, 2.0], 1) == pytest.approx(0.5)
    assert rank_fit([1, 2, 4, 8], [0.0, 1.0, 0.0, -3.0], 2) == pytest.approx(np.polyfit([0, 1, 2, 3], [0, 1, 0, -3], 2)[0])


def test_the_table_marks_a_grid_whose_losses_do_not_resolve_the_rate():
    from workbench.organism.sweep_summary import format_table, summarize

    def role(log_odds: float) -> dict:
        return {"log_odds": log_odds, "p_target": 0.1, "wilson": [0.05, 0.15], "final_loss": 1.78, "trained": True,
                "cos_teacher": {"whole": 0.0}}

    def row(label: str, r: int, lr_losses: dict) -> dict:
        return {"organism": "o", "channel": "hard", "regime": {"students": "lora", "r": r, "optimizer": "sgd"},
                "label": label, "seed": 0, "lr": 0.3, "lr_losses": lr_losses, "student": role(0.2), "control": role(0.0)}

    summary = summarize([row("LoRA r=8, sgd", 8, {"0.1": 1.7830, "0.3": 1.7821, "1": 1.7826}),
                         row("LoRA r=64, sgd", 64, {"0.1": 2e-5, "0.3": 1e-5, "1": 3e-5})])
    assert [e["lr_tie"] for e in summary] == [True, False]
    assert [e["lr_at_edge"] for e in summary] == [False, False]
    lines = format_table(summary).splitlines()
    assert "3e-01 ~" in lines[2] and "~" not in lines[3]
