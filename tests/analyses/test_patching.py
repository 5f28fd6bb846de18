"""Causal localisation: exact endpoints, a planted one-group delta found alone, engines agree,
undefined fractions stay undefined, activation patching at the final residual."""

import pytest
import torch

from workbench.core.errors import ConfigError, UnknownNameError
from workbench.core.models import copy_model
from workbench.analyses.patching import (
    ActivationPatchingResult,
    DeltaPatchingResult,
    PatchConfig,
    activation_patching,
    cache_activations,
    delta_patching,
    patched_logits,
)
from workbench.organism.load import load_seed
from workbench.organism.trait import organism_trait

PLANTED_GROUP = "blocks.0.mlp.out"


@pytest.fixture(scope="module")
def seed(tiny_organism):
    return load_seed(tiny_organism.directory, roles=["base", "base_x", "teacher", "student", "control", "cross"],
                     target="owl")


@pytest.fixture(scope="module")
def trait(seed):
    return seed.trait


@pytest.fixture(scope="module")
def lin(seed):
    lin = seed.lineage
    lin.add("planted", _with_weights(lin, "base", "teacher", lin.group(PLANTED_GROUP).keys), role="student",
            parent="base")
    head = {k for g in ("ln_final", "unembed") for k in lin.group(g).keys}
    lin.add("student_body", _with_weights(lin, "base", "student", set(lin.keys) - head), role="student", parent="base")
    return lin


def _with_weights(lin, recipient, donor, keys):
    """A copy of `recipient` with `donor`'s weights on `keys`."""
    model = copy_model(lin[recipient])
    state, d = dict(model.state_dict()), lin.state(donor)
    state.update({k: d[k] for k in keys})
    model.load_state_dict(state)
    return model


@pytest.fixture(scope="module")
def delta(lin, trait):
    return delta_patching(lin, trait)


def test_all_groups_reproduce_the_student_none_the_base(lin, trait, delta):
    lo_student, lo_base = (trait.log_odds(lin[n]) for n in ("student", "base"))
    assert delta.row("all", "all")["log_odds"] == pytest.approx(lo_student, abs=1e-5)
    assert delta.row("all", "all")["recovered"] == pytest.approx(1.0, abs=1e-5)
    assert delta.row("none", "none")["log_odds"] == pytest.approx(lo_base, abs=1e-5)
    assert delta.row("none", "none")["recovered"] == 0.0
    # no single group is the whole effect on its own in the tiny student
    assert all(r["recovered"] < 0.99 for r in delta.table("group"))


def test_student_effect_is_clear_and_greedy_set_recovers_80_percent(delta):
    assert delta.defined and delta.log_odds["student"] - delta.log_odds["base"] > 0.5
    assert delta.greedy_set is not None and len(delta.greedy_set) < len(delta.table("group"))
    assert delta.greedy[len(delta.greedy_set) - 1]["recovered"] >= 0.8
    if len(delta.greedy_set) > 1:
        assert delta.greedy[len(delta.greedy_set) - 2]["recovered"] < 0.8
    # the control's delta on the student's best group does not move the trait like the student's does
    top = delta.top_groups(1)[0]
    assert top["gain"] > top["control_gain"] + 0.1 and top["gain"] > top["random_gain"] + 0.1


def test_planted_single_group_delta_is_found_alone(lin, trait):
    result = delta_patching(lin, trait, PatchConfig(student="planted", control=None, random_control=False))
    assert result.defined
    gains = {r["name"]: r["gain"] for r in result.table("group")}
    assert gains.pop(PLANTED_GROUP) == pytest.approx(result.log_odds["student"] - result.log_odds["base"])
    assert all(g == 0.0 for g in gains.values())
    assert result.row("leave_one_out", PLANTED_GROUP)["recovered"] == pytest.approx(0.0, abs=1e-6)
    assert result.greedy_set == [PLANTED_GROUP]
    assert result.row("layer", "layer 0")["recovered"] == pytest.approx(1.0, abs=1e-6)


def test_functional_and_bridge_engines_agree(lin, trait):
    cfg = dict(control=None, random_control=False, greedy=False)
    functional = delta_patching(lin, trait, PatchConfig(engine="functional", **cfg))
    bridge = delta_patching(lin, trait, PatchConfig(engine="bridge", **cfg))
    assert functional.engine == "functional" and bridge.engine == "bridge"
    for a, b in zip(functional.rows, bridge.rows, strict=True):
        assert (a["kind"], a["name"]) == (b["kind"], b["name"])
        assert a["log_odds"] == pytest.approx(b["log_odds"], abs=1e-4)


def test_recovered_fraction_undefined_without_a_clear_effect(lin, trait):
    """The control student has no clear effect over the base: no fraction, never a huge ratio."""
    result = delta_patching(lin, trait, PatchConfig(student="control", control="student", random_control=False))
    assert not result.defined and result.greedy_set is None and result.greedy == []
    assert all(r["recovered"] is None for r in result.rows)
    assert "undefined" in result.figures()["bars"].layout.title.text
    rows = [r.to_dict() for r in result.summary_rows()]  # the summary falls back to gains in nats, and nothing clears
    assert all("nats" in r["measure"] and not r["clears"] for r in rows)
    assert rows[0]["value"] == result.table("group")[0]["gain"]


def test_bad_names_are_clear_errors(lin, trait):
    with pytest.raises(UnknownNameError, match="zebra"):
        delta_patching(lin, organism_trait(lin.tokenizer, "zebra"))
    with pytest.raises(ConfigError, match="Trait"):
        delta_patching(lin, "owl")
    with pytest.raises(UnknownNameError, match="studnet"):
        delta_patching(lin, trait, PatchConfig(student="studnet"))
    with pytest.raises(ConfigError, match="other coordinates"):
        delta_patching(lin, trait, PatchConfig(control="cross"))
    with pytest.raises(UnknownNameError, match="hook"):
        activation_patching(lin, trait, PatchConfig(hooks=("blocks.0.hook_resid_postt",)))


def test_final_residual_patch_reproduces_the_students_logits(lin, trait):
    """Base run with the final residual of a student whose delta stops before the head gives
    that student's logits; the reverse gives the base's."""
    tokens = trait.tokens
    final = f"blocks.{lin.cfg.n_layers - 1}.hook_resid_post"
    body, base = lin["student_body"], lin["base"]
    with torch.inference_mode():
        want_body, want_base = body(tokens), base(tokens)
    got = patched_logits(base, tokens, final, cache_activations(body, tokens, [final])[final])
    torch.testing.assert_close(got, want_body, atol=1e-5, rtol=1e-5)
    back = patched_logits(body, tokens, final, cache_activations(base, tokens, [final])[final])
    torch.testing.assert_close(back, want_base, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(want_body, want_base, atol=1e-3)


def test_activation_patching_tables(lin, trait, tmp_path):
    final = f"blocks.{lin.cfg.n_layers - 1}.hook_resid_post"
    hooks = ("hook_embed", "blocks.0.hook_mlp_out", final)
    result = activation_patching(lin, trait, PatchConfig(student="student_body", hooks=hooks, positions=2))
    assert result.defined
    assert result.value("student->base", final) == pytest.approx(1.0, abs=1e-4)
    assert result.value("base->student", final) == pytest.approx(0.0, abs=1e-4)
    assert result.value("student->base", "hook_embed") < 0.5
    # at the answer position alone the final residual carries everything too (causal attention)
    assert result.value("student->base", final, 0) == pytest.approx(1.0, abs=1e-4)
    assert {r["direction"] for r in result.rows} == {"student->base", "base->student", "control->base"}
    assert all(r["recovered"] is None for r in result.rows if r["direction"] == "control->base")
    result.save(tmp_path)
    loaded = ActivationPatchingResult.load(tmp_path)
    assert loaded.rows == result.rows and loaded.config == result.config
    assert len(loaded.figures()) == 3
    rows = {r.where: r.to_dict() for r in loaded.summary_rows()}
    assert list(rows) == list(result.hooks)
    assert rows[final]["value"] == pytest.approx(1.0, abs=1e-4) and rows[final]["clears"]
    assert rows[final]["remaining base->student"] == pytest.approx(0.0, abs=1e-4)
    assert rows[final]["control"] == "control->base" and rows[final]["control_value"] < 0.5
    assert not rows["hook_embed"]["clears"]


def test_delta_result_contract_round_trip(delta, tmp_path):
    delta.save(tmp_path)
    loaded = DeltaPatchingResult.load(tmp_path)
    assert loaded.rows == delta.rows and loaded.greedy_set == delta.greedy_set and loaded.config == delta.config
    assert loaded.target == delta.target == "owl"
    assert set(loaded.figures()) == {"bars", "heatmap"}
    rows = [r.to_dict() for r in loaded.summary_rows()]
    groups = [r for r in rows if r["group"] == "single group"]
    assert [r["where"] for r in groups] == [r["name"] for r in delta.table("group")]
    top = next(r for r in groups if r["where"] == delta.top_groups(1)[0]["name"])
    assert top["value"] == pytest.approx(delta.top_groups(1)[0]["recovered"]) and top["clears"]
    assert top["value"] > top["control_value"] and "random Δ" in top and "lost_without_it" in top
    whole = next(r for r in rows if r["group"] == "all groups")
    assert whole["where"] == "whole model" and whole["value"] == pytest.approx(1.0)
    assert rows[-1]["group"] == "greedy set" and rows[-1]["value"] >= 0.8


def test_bridge_engine_patches_in_place_and_restores(lin, trait):
    """engine="bridge": states are views of the live weights (no whole-model copy); each patched
    state is scored in the lineage model it shares most weights with, holding a copy of the other
    keys only, and every lineage model is bit-identical afterwards."""
    from workbench.analyses.patching import PatchedModels

    before = {n: lin.state(n) for n in ("base", "student")}
    seen = []

    def metric(model):
        host = next(n for n in ("base", "student") if lin[n] is model)
        live = lin.params(host)
        seen.append((host, {k for k in lin.keys if not torch.equal(live[k], before[host][k])}))
        return trait.log_odds(model)

    pm = PatchedModels(lin, "base", metric, engine="bridge")
    assert pm.engine == "bridge"
    assert all(pm.state("base")[k].data_ptr() == p.data_ptr() for k, p in lin.params("base").items())
    keys = set(lin.group(PLANTED_GROUP).keys)
    single = pm.log_odds(pm.mix("student", "base", keys))
    leave_out = pm.log_odds(pm.mix("base", "student", keys))
    assert seen[0][0] == "base" and seen[0][1] <= keys  # only the patched group differs from the host
    assert seen[1][0] == "student" and seen[1][1] <= keys
    for n, state in before.items():
        assert all(torch.equal(lin.params(n)[k], state[k]) for k in lin.keys)
    ref = PatchedModels(lin, "base", trait.log_odds, engine="functional")
    assert single == pytest.approx(ref.log_odds(ref.mix("student", "base", keys)), abs=1e-4)
    assert leave_out == pytest.approx(ref.log_odds(ref.mix("base", "student", keys)), abs=1e-4)
