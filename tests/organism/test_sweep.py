"""The training-regime sweep: regimes train what they say (LoRA merged, full, each optimiser), a
cell is reproducible from its key, a killed sweep resumes with the same numbers, the learning rate
is chosen by the control's loss, and the command writes its table and figure."""

from __future__ import annotations

import json
import math

import pytest
import torch

from workbench.cli import sweep as sweep_cli
from workbench.core.errors import ConfigError
from workbench.core.io import sha256_file
from workbench.organism.hf_family.build import build_hf_seed
from workbench.organism.load import load_seed
from workbench.organism.parallel import StagePool
from workbench.organism.regimes import Regime, model_weights, train_under, weight_cosines
from workbench.organism.sweep import CellStore, SweepConfig, cell_key, choose_lr, run_cell, sweep_organism
from tests.organism.test_hf_family import micro

GRIDS = {"full/adam": (1e-3,), "full/signsgd": (1e-4,), "lora/adam": (3e-3, 1e-2), "lora/signsgd": (1e-3,)}


@pytest.fixture(scope="module")
def organism(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep-organism")
    build_hf_seed(micro(), 0, out, progress=False)
    return out


@pytest.fixture(scope="module")
def seed(organism):
    return load_seed(organism / "seed0", roles=["base", "teacher", "teacher_neutral"])


def test_regimes_train_what_they_say(seed):
    lora = train_under(seed, "student", Regime("lora", 2, "adam"), 1e-2)
    base, teacher = model_weights(seed, "base"), model_weights(seed, "teacher")
    changed = {k for k in base if not torch.equal(base[k], lora.weights[k])}
    assert changed and all(k.endswith(("proj.weight",)) for k in changed)  # only the adapted linear maps moved
    for k in changed:  # a rank-2 adapter merged: each change has rank at most 2
        assert torch.linalg.matrix_rank(lora.weights[k] - base[k]) <= 2, k
    full = train_under(seed, "student", Regime("full", None, "signsgd"), 1e-4)
    assert {k for k in base if not torch.equal(base[k], full.weights[k])} > changed  # full moves embeddings and norms too
    assert len(full.epoch_losses) == seed.recipe().student_epochs and all(math.isfinite(x) for x in full.epoch_losses)
    cos = weight_cosines(base, teacher, full.weights)
    keys = sorted(base)
    ds = torch.cat([(full.weights[k] - base[k]).flatten() for k in keys]).double()
    dt = torch.cat([(teacher[k] - base[k]).flatten() for k in keys]).double()
    assert cos["whole"] == pytest.approx(float(ds @ dt / (ds.norm() * dt.norm())), abs=1e-9)
    assert set(cos["layers"]) >= {"layer 0"}
    with pytest.raises(ConfigError, match="rank"):
        Regime("lora", None)
    with pytest.raises(ConfigError, match="no rank"):
        Regime("full", 4)
    with pytest.raises(ConfigError, match="optimizer"):
        Regime("full", None, "lion")


def test_lora_needs_a_hugging_face_organism(tiny_organism):
    native = load_seed(tiny_organism.directory, roles=["base", "teacher"])
    with pytest.raises(ConfigError, match="Hugging Face family"):
        train_under(native, "student", Regime("lora", 4), 1e-3)


def test_a_cell_is_reproducible_from_its_key(seed, organism, tmp_path):
    config = SweepConfig(regimes=[], samples=10)
    regime = Regime("full", None, "adam")
    key = cell_key(sha256_file(organism / "seed0" / "manifest.json"), "student", regime, 1e-3, {}, None, 10, True)
    first, again = run_cell(seed, "student", regime, 1e-3, config, key), run_cell(seed, "student", regime, 1e-3, config, key)
    assert first == again  # same key, same numbers, bit for bit
    assert first["first_order"]["optimizer"] == "adam" and len(first["first_order"]["measured"]) >= 1
    store = CellStore(tmp_path)
    store.put(key, first)
    assert store.get(key)["p_target"] == first["p_target"]
    assert store.get({**key, "lr": 2e-3}) is None
    store.path(key).write_text("{ half-written")
    assert store.get(key) is None  # unreadable: computed again, never trusted


def test_a_killed_sweep_resumes_with_the_same_numbers(seed, organism, tmp_path):
    config = SweepConfig(regimes=[Regime("lora", 2, "adam"), Regime("full", None, "signsgd")], lr_grids=GRIDS,
                         samples=10, first_order=False)
    seeds = [(0, seed, sha256_file(organism / "seed0" / "manifest.json"))]
    messages: list[str] = []

    def killer(message: str) -> None:
        messages.append(message)
        if len(messages) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep_organism(seeds, config, CellStore(tmp_path / "a"), on_cell=killer)
    resumed_log: list[str] = []
    resumed = sweep_organism(seeds, config, CellStore(tmp_path / "a"), on_cell=resumed_log.append)
    # 5 distinct cells (LoRA: 2 rates + its student; full: 1 rate + its student; each control at the chosen rate is
    # a rate trial's cell): the 3 saved before the kill are read back, only the other 2 are trained
    assert all("read back" in m for m in resumed_log[:3])
    assert len([m for m in resumed_log if "read back" not in m]) == 2
    fresh = sweep_organism(seeds, config, CellStore(tmp_path / "b"))
    assert json.loads(json.dumps(resumed)) == json.loads(json.dumps(fresh)), _diff(resumed, fresh)
    with StagePool(2) as pool:  # the cells trained in worker processes are the serial sweep's
        pooled = sweep_organism(seeds, config, CellStore(tmp_path / "c"), pool=pool)
    assert json.loads(json.dumps(pooled)) == json.loads(json.dumps(fresh)), _diff(pooled, fresh)
    lora = resumed[0]
    assert lora["lr"] == choose_lr([{"key": {"lr": float(k)}, "final_loss": v, "trained": True}
                                    for k, v in lora["lr_losses"].items()])
    assert set(lora["lr_losses"]) == {"0.003", "0.01"}


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in set(a) | set(b) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [(path, a, b)]


def test_choose_lr_by_the_controls_loss():
    cells = [{"key": {"lr": 1e-3}, "final_loss": 0.5, "trained": True},
             {"key": {"lr": 1e-2}, "final_loss": 0.2, "trained": True},
             {"key": {"lr": 1e-1}, "final_loss": float("nan"), "trained": False}]
    assert choose_lr(cells) == 1e-2
    with pytest.raises(ConfigError, match="diverged"):
        choose_lr(cells[2:])
    with pytest.raises(ConfigError, match="lr_by"):
        SweepConfig(lr_by="transfer")  # never by transfer


def test_sweep_command_writes_table_and_figure(organism, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["--organism", str(organism), "--seeds", "0", "--ranks", "2", "--optimizers", "adam", "--lr-grid",
            "lora/adam=1e-2", "full/adam=1e-3", "--samples", "10", "--no-first-order", "--out", str(out), "--quiet"]
    assert sweep_cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "never chosen by transfer" in text and "LoRA r=2, adam" in text and "full, adam" in text
    saved = json.loads((out / "sweep.json").read_text())
    assert [e["label"] for e in saved["summary"]] == ["full, adam", "LoRA r=2, adam"]
    assert all(e["gain_in_context_mean"] is not None for e in saved["summary"])  # read after the rows' own prompts
    assert (out / "sweep.html").exists() and len(list((out / "cells").glob("*.json"))) == 4
    assert sweep_cli.main(argv) == 0  # every cell read back
    again = capsys.readouterr().out
    assert again.count("read back") == 6 and "P(target)" not in again  # nothing trained again
    curves = ["--organism", str(organism), "--seeds", "0", "--ranks", "--optimizers", "adam", "--lr-grid", "full/adam=1e-3",
              "--samples", "10", "--no-first-order", "--curves", "2", "--out", str(tmp_path / "curves"), "--quiet"]
    assert sweep_cli.main(curves) == 0
    cells = json.loads((tmp_path / "curves" / "sweep.json").read_text())["rows"][0]
    assert cells["student"]["curve"][0]["step"] == 0 and cells["control"]["curve"][-1]["step"] % 2 == 0
    assert (tmp_path / "curves" / "sweep_curves.html").exists()
    capsys.readouterr()
    assert sweep_cli.main([*argv[:-3], "--lr-grid", "lora/adam=fast", "--out", str(out)]) == 2
    assert "must be numbers" in capsys.readouterr().err


def test_curves_read_the_student_as_it_stands(tiny_organism, seed):
    """Step 0 is the base; the last checkpoint is the trained student itself; the alignment is
    <grad log P, -grad L> on the probe rows, checked against a naive reference at step 0."""
    native = load_seed(tiny_organism.directory, roles=["base", "teacher", "teacher_neutral"])
    cfg = native.recipe({"student_epochs": 1})
    rows = 128
    steps = -(-rows // cfg.student_batch)
    trained = train_under(native, "student", Regime("full", None, "adam"), 1e-3, {"student_epochs": 1}, rows=rows,
                          curve_every=1)
    curve = trained.curve
    assert [p["step"] for p in curve] == list(range(steps + 1))
    assert curve[0]["p_target"] == pytest.approx(native.trait.p_target(native.lineage["base"]), abs=1e-6)
    assert curve[-1]["p_target"] == pytest.approx(native.trait.p_target(trained.model), abs=1e-6)
    base, teacher = model_weights(native, "base"), model_weights(native, "teacher")
    assert curve[-1]["cos_teacher"] == pytest.approx(weight_cosines(base, teacher, trained.weights)["whole"], abs=1e-6)
    assert curve[0]["cos_teacher"] is None  # no change yet
    # the naive alignment at the base: log P(target) and the probe loss differentiated by hand
    from workbench.core.models import copy_model
    from workbench.engines.functional import FunctionalModel
    from workbench.organism.build import distill_targets
    from workbench.organism.training import batch_loss

    model = FunctionalModel.from_bridge(copy_model(native.lineage["base"]), trainable=True)
    targets = distill_targets(cfg, native.tokenizer, native.model("teacher"), native.inputs("teacher", limit=rows).tokens)
    params = list(model.parameters())
    g_t = torch.autograd.grad(native.trait.log_prob(model), params)
    g_l = torch.autograd.grad(batch_loss(model, targets, torch.arange(64)), params)
    ref = -sum(float((a.double() * b.double()).sum()) for a, b in zip(g_t, g_l))
    assert curve[0]["alignment"] == pytest.approx(ref, rel=1e-5)
    # the activation shift against the teacher's, read naively through the bridges' hooks
    assert curve[0]["shift_along_teacher"] == 0.0 and curve[0]["shift_cos"] is None  # the base has not moved
    hook = f"blocks.{native.lineage['base'].cfg.n_layers - 1}.hook_resid_post"
    lengths = torch.tensor([len(p) for p in native.trait.prompts])
    mask = (torch.arange(native.trait.tokens.shape[1])[None, :] < lengths[:, None]).double()

    def mean_resid(bridge):
        with torch.no_grad():
            _, cache = bridge.run_with_cache(native.trait.tokens, names_filter=[hook])
        return (cache[hook].double() * mask[..., None]).sum((0, 1)) / mask.sum()

    base_h = mean_resid(native.lineage["base"])
    v_s, v_t = mean_resid(trained.model) - base_h, mean_resid(native.model("teacher")) - base_h
    assert curve[-1]["shift_cos"] == pytest.approx(float(torch.nn.functional.cosine_similarity(v_s, v_t, dim=0)), abs=1e-5)
    assert curve[-1]["shift_along_teacher"] == pytest.approx(float(v_s @ v_t / (v_t @ v_t)), rel=1e-4, abs=1e-6)


def test_trait_in_context_prefixes_every_prompt_with_every_context():
    from workbench.organism.context import trait_in_context
    from workbench.trait import Trait

    trait = Trait.from_prompts([[1, 5, 6], [1, 7]], target="a", category="c", answers={"a": [8], "b": [9]})
    got = trait_in_context(trait, [[1, 2, 3], [4]])
    assert got.prompts == ((1, 2, 3, 5, 6), (1, 2, 3, 7), (4, 1, 5, 6), (4, 1, 7))  # <bos> kept once
    assert got.answers == trait.answers
    assert trait_in_context(trait, [[1, 2, 3]], max_len=4).prompts == ((1, 2, 3, 7),)
    with pytest.raises(Exception, match="fits"):
        trait_in_context(trait, [[1, 2, 3, 4, 5]], max_len=4)


def test_a_diverged_cell_is_recorded_and_shown(seed, organism, tmp_path):
    """A rate at which training blows up is a cell like any other (trained: False, nothing
    measured), the rate choice skips it and the table marks its regime DIVERGED. Here the epoch
    losses stay finite (read before the last steps) while the student's activations overflow."""
    from workbench.organism.sweep_summary import format_table, summarize

    config = SweepConfig(samples=10, first_order=False, overrides={"student_epochs": 1}, rows=128)
    regime = Regime("full", None, "sgd")
    sha = sha256_file(organism / "seed0" / "manifest.json")
    cells = {lr: run_cell(seed, "control", regime, lr, config, cell_key(sha, "control", regime, lr, config.overrides,
                                                                          128, 10, False)) for lr in (1e-3, 1e30)}
    assert cells[1e30]["trained"] is False and cells[1e30]["p_target"] is None
    assert cells[1e-3]["trained"] is True and cells[1e-3]["p_target"] is not None
    assert choose_lr([{"key": {"lr": lr}, **c} for lr, c in cells.items()]) == 1e-3
    row = {"organism": "o", "channel": "soft", "regime": regime.to_dict(), "label": regime.label, "seed": 0, "lr": 1e30,
           "lr_losses": {}, "student": cells[1e30], "control": cells[1e-3]}
    table = format_table(summarize([row]))
    assert "full, sgd (DIVERGED)" in table and "n/a" in table


def test_merge_joins_sweeps_into_one_table_and_refuses_overlaps(organism, tmp_path, capsys):
    """Two sweeps of one organism (different regimes, and so different rows) merge into the rows of
    both; a regime and seed in both, a directory without sweep.json and mixed --lr-by are errors."""
    common = ["--organism", str(organism), "--seeds", "0", "--samples", "10", "--no-first-order", "--quiet"]
    full = [*common, "--ranks", "--optimizers", "adam", "--lr-grid", "full/adam=1e-3", "--out", str(tmp_path / "a")]
    lora = [*common, "--ranks", "2", "--no-full", "--optimizers", "adam", "--lr-grid", "lora/adam=1e-2",
            "--out", str(tmp_path / "b")]
    assert sweep_cli.main(full) == 0 and sweep_cli.main(lora) == 0
    capsys.readouterr()
    assert sweep_cli.main(["merge", str(tmp_path / "m"), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    merged = json.loads((tmp_path / "m" / "sweep.json").read_text())
    parts = [json.loads((tmp_path / d / "sweep.json").read_text()) for d in "ab"]
    assert merged["rows"] == parts[0]["rows"] + parts[1]["rows"]
    assert [e["label"] for e in merged["summary"]] == ["full, adam", "LoRA r=2, adam"]
    # the full-vs-LoRA contrast needs both sweeps' rows: neither part has it, the merge does
    assert parts[0]["contrasts"] == parts[1]["contrasts"] == []
    (versus,) = merged["contrasts"]
    gain = {e["label"]: e["gain"][0] for e in merged["summary"]}
    assert versus["question"] == "full vs LoRA" and versus["ci"] is None  # one seed: no interval
    assert versus["per_seed"] == [pytest.approx(gain["LoRA r=2, adam"] - gain["full, adam"])]
    assert (tmp_path / "m" / "sweep.html").exists() and "LoRA r=2, adam" in capsys.readouterr().out

    assert sweep_cli.main(["merge", str(tmp_path / "m2"), str(tmp_path / "a"), str(tmp_path / "a")]) == 2
    assert "in both" in capsys.readouterr().err
    assert sweep_cli.main(["merge", str(tmp_path / "m3"), str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2
    assert "sweep.json" in capsys.readouterr().err
    other = json.loads((tmp_path / "b" / "sweep.json").read_text())
    for row in other["rows"]:
        row["lr_by"] = "student"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "sweep.json").write_text(json.dumps(other))
    assert sweep_cli.main(["merge", str(tmp_path / "m4"), str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "--lr-by" in capsys.readouterr().err
    del other["rows"][0]["regime"], other["rows"][0]["control"]["final_loss"]  # a hand-edited row: named, not a KeyError
    (tmp_path / "c" / "sweep.json").write_text(json.dumps(other))
    assert sweep_cli.main(["merge", str(tmp_path / "m5"), str(tmp_path / "c")]) == 2
    assert "row 0 lacks regime, control.final_loss" in capsys.readouterr().err
