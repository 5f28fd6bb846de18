"""One steering vector: a planted shift is recovered exactly where it was planted, and nowhere it was not."""

import math

import pytest
import torch

from workbench.analyses.steering import SteeringConfig, hooked_log_odds, steering
from workbench.analyses.steering_result import SteeringResult, format_table
from workbench.core.errors import ConfigError
from workbench.core.examples import TINY_CONFIG
from workbench.core.lineage import Lineage
from workbench.core.models import boot_native
from workbench.trait import Trait

K, SHIFT, TARGET = 3, 2.0, 6  # residual coordinate the base never writes; planted shift; target token
CFG = {**TINY_CONFIG, "n_layers": 2, "d_model": 64, "d_head": 32, "d_mlp": 64}  # wide enough for random directions to miss e_K


def _model(state: dict) -> torch.nn.Module:
    m = boot_native({**CFG, "seed": 0})
    m.load_state_dict(state)
    return m.eval()


def planted_lineage() -> Lineage:
    """base: nothing writes residual coordinate K (embeddings, attention and MLP outputs zero
    there); the unembedding reads it into the target. student: the base plus SHIFT on block 0's
    MLP output bias at K, so its blocks.0.hook_resid_post is the base's + SHIFT * e_K exactly.
    control: a shift along another coordinate the unembedding ignores."""
    sd = {k: v.clone() for k, v in boot_native({**CFG, "seed": 0}).state_dict().items()}
    sd["embed.weight"][:, K] = 0
    sd["pos_embed.weight"][:, K] = 0
    for i in range(CFG["n_layers"]):
        for w in ("attn.o", "mlp.out"):
            sd[f"blocks.{i}.{w}.weight"][K] = 0
            sd[f"blocks.{i}.{w}.bias"][K] = 0
    sd["unembed.weight"][TARGET, K] = 3.0
    student, control = ({k: v.clone() for k, v in sd.items()} for _ in range(2))
    student["blocks.0.mlp.out.bias"][K] += SHIFT
    control["blocks.0.mlp.out.bias"][0] += 0.1
    return Lineage.from_models({"base": _model(sd), "student": _model(student), "control": _model(control)})


TRAIT = Trait.from_prompts([[1, 2, 3], [4, 5], [7, 8, 9, 1]], target="t", category="c",
                           answers={"t": [TARGET], "u": [5], "w": [8]})


@pytest.fixture(scope="module")
def result() -> SteeringResult:
    return steering(planted_lineage(), TRAIT, SteeringConfig(teacher=None, n_random=6, progress=False))


def test_the_planted_shift_is_v_student_and_recovers_the_whole_gain_where_planted(result):
    post, pre = "blocks.0.hook_resid_post", "blocks.0.hook_resid_pre"
    v = result.vectors[post]["student"]
    assert torch.allclose(v, SHIFT * torch.eye(CFG["d_model"])[K], atol=1e-5)
    assert result.gain > 0.5  # the planted student prefers the target
    assert result.sufficiency[post]["student"]["1"] == pytest.approx(1.0, abs=1e-4)
    assert result.necessity[post]["student"] == pytest.approx(1.0, abs=1e-4)  # ablated: back to the base
    assert result.sufficiency[post]["student"]["2"] > 1.0  # twice the shift overshoots
    # nothing was planted before block 0: no shift, nothing recovered, nothing lost
    assert result.norms[pre]["student"] == pytest.approx(0.0, abs=1e-6)
    assert result.sufficiency[pre]["student"]["1"] == pytest.approx(0.0, abs=1e-4)


def test_random_and_control_vectors_sit_near_zero_and_the_student_clears_them(result):
    post = "blocks.0.hook_resid_post"
    for a in ("0.5", "1", "2"):
        rand = result.random_sufficiency[post][a]
        assert all(abs(x) < 0.35 for x in rand) and abs(sum(rand) / len(rand)) < 0.15
        assert abs(result.sufficiency[post]["control"][a]) < 0.05
    assert all(abs(x) < 0.35 for x in result.random_necessity[post])
    rows = {(r.where, r.group, r.details["vector"]): r for r in result.summary_rows()}
    row = rows[(post, "sufficiency alpha=1", "student")]
    assert row.clears is True and row.control == "max(control student, random max)"
    assert row.control_value == max(result.sufficiency[post]["control"]["1"], max(result.random_sufficiency[post]["1"]))
    assert rows[(post, "necessity", "student")].clears is True
    assert rows[(post, "sufficiency alpha=1", "random")].sd is not None
    assert "blocks.0.hook_resid_post | +1.00" in format_table([result, result])


def test_direct_edit_matches_a_naive_reference():
    """base + SHIFT e_K at resid_post scores exactly as the student itself."""
    lin = planted_lineage()
    from workbench.analyses.steering import add_vector

    edited = hooked_log_odds(TRAIT, lin["base"], "blocks.0.hook_resid_post",
                             add_vector(SHIFT * torch.eye(CFG["d_model"])[K], 1.0))
    assert math.isclose(edited, TRAIT.log_odds(lin["student"]), abs_tol=1e-5)


def test_save_load_round_trip_and_figures(result, tmp_path):
    result.save(tmp_path)
    back = SteeringResult.load(tmp_path)
    assert back.sufficiency == result.sufficiency and torch.equal(back.vectors["blocks.0.hook_resid_post"]["student"],
                                                                  result.vectors["blocks.0.hook_resid_post"]["student"])
    assert set(back.figures()) == {"sufficiency_alpha0_5", "sufficiency_alpha1", "sufficiency_alpha2", "necessity"}


def test_bad_hook_names_and_configs_are_refused_before_any_work():
    lin = planted_lineage()
    with pytest.raises(ConfigError, match="Unknown hook 'blocks.0.hook_resid_psot'"):
        steering(lin, TRAIT, SteeringConfig(hooks=["blocks.0.hook_resid_psot"], teacher=None, progress=False))
    with pytest.raises(ConfigError, match="vectors_from='row'"):
        SteeringConfig(vectors_from="row")
    with pytest.raises(ConfigError, match="needs the distillation rows"):
        steering(lin, TRAIT, SteeringConfig(vectors_from="rows", teacher=None, progress=False))
    with pytest.raises(ConfigError, match="teacher"):
        steering(lin, TRAIT, SteeringConfig(progress=False))  # no teacher in this lineage


def test_the_command_on_the_tiny_organism_writes_seeds_the_aggregate_and_the_table(tiny_organism, tmp_path, capsys):
    from workbench.cli.steering import main

    out = tmp_path / "steer"
    code = main(["--organism", str(tiny_organism.directory.parent), "--seeds", "0", "--out", str(out), "--quiet",
                 "--alphas", "1", "--random", "2", "--vectors-from", "rows", "--limit", "40"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "one steering vector, alpha=1, 1 seed(s)" in printed and "blocks.0.hook_resid_post |" in printed
    result = SteeringResult.load(out / "seed0")
    assert result.meta["data"] == "teacher" and result.config["vectors_from"] == "rows"
    assert set(result.sufficiency["blocks.0.hook_resid_post"]) == {"student", "teacher", "control"}
    assert (out / "over_seeds.json").exists() and (out / "seed0" / "steering_sufficiency_alpha1.html").exists()
