"""The channel tests: masked losses are exact against a naive reference, a masked or frozen
retrain does what it says, `run_channels` hands each edit and its control to the source, and the
command writes, summarises and resumes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from workbench.analyses.channels import (
    ChannelConfig,
    ChannelResult,
    ChannelRow,
    Retraining,
    channels_over_seeds,
    run_channels,
    transfer_left,
)
from workbench.cli import channels as channels_cli
from workbench.cli.organism_runs import channel_tests
from workbench.core.errors import ConfigError
from workbench.organism.channel_source import OrganismChannelSource
from workbench.organism.load import load_seed
from workbench.organism.training import hard_distill_loss, restricted_log_probs, soft_distill_loss
from workbench.trait import log_odds


def test_masked_losses_equal_a_naive_mean_over_kept_positions_and_ignore_a_planted_disagreement():
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([1, 3, 4, 6])
    student = torch.randn(3, 5, 8, generator=gen)
    teacher = torch.log_softmax(torch.randn(3, 5, 4, generator=gen), -1)
    mask = torch.rand(3, 5, generator=gen) < 0.6
    s = torch.log_softmax(student[..., ids], -1)
    naive = [float((teacher[i, j].exp() * (teacher[i, j] - s[i, j])).sum()) for i in range(3) for j in range(5) if mask[i, j]]
    assert float(soft_distill_loss(student, teacher, ids, mask)) == pytest.approx(sum(naive) / len(naive), rel=1e-5)
    written = ids[torch.randint(0, 4, (3, 5), generator=gen)]
    index = {int(t): k for k, t in enumerate(ids)}
    naive_ce = [-float(s[i, j, index[int(written[i, j])]]) for i in range(3) for j in range(5) if mask[i, j]]
    assert float(hard_distill_loss(student, written, ids, mask)) == pytest.approx(sum(naive_ce) / len(naive_ce), rel=1e-5)
    # without a mask: the plain mean, as before
    assert float(hard_distill_loss(student, written, ids)) == float(
        -restricted_log_probs(student, ids).gather(-1, torch.searchsorted(ids, written)[..., None]).mean())
    # a planted disagreement at the masked positions changes nothing, and gets no gradient
    planted = teacher.clone()
    planted[~mask] = torch.log_softmax(torch.tensor([9.0, -9.0, -9.0, -9.0]), -1)
    student.requires_grad_(True)
    loss = soft_distill_loss(student, planted, ids, mask)
    assert float(loss.detach()) == pytest.approx(float(soft_distill_loss(student, teacher, ids, mask).detach()), rel=1e-6)
    loss.backward()
    assert float(student.grad[~mask].abs().max()) == 0.0


def test_a_partial_loss_mask_reads_the_kept_positions_next_tokens(tiny_organism):
    """One row, one step: the loss the loop reports is the base's cross-entropy (over the channel)
    of the token after each kept position, averaged over the kept positions only."""
    from workbench.engines.functional import FunctionalModel
    from workbench.organism.build import distill_targets
    from workbench.organism.training import train_student

    seed = load_seed(tiny_organism.directory, roles=["base", "teacher"])
    cfg = seed.recipe({"student_epochs": 1, "mode": "hard"})
    tokens = seed.inputs("teacher", limit=1).tokens
    targets = distill_targets(cfg, seed.tokenizer, seed.lineage["teacher"], tokens)
    kept = targets.positions[[0, 3]]  # two of the supervised positions
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[0, kept] = True
    targets.loss_mask = mask[:, targets.positions]
    model = FunctionalModel.from_bridge(seed.lineage["base"], trainable=True)
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens)[0][:, list(seed.channel_ids)].float(), -1)
    expected = -sum(float(logp[t, seed.channel_ids.index(int(tokens[0, t + 1]))]) for t in kept.tolist()) / 2
    assert train_student(model, targets, cfg, seed=0, progress=False)[0] == pytest.approx(expected, rel=1e-5)


def test_soft_labels_without_excluded_tokens_are_renormalised_over_the_rest(tiny_organism):
    from workbench.organism.build import distill_targets

    seed = load_seed(tiny_organism.directory, roles=["base", "teacher"])
    cfg, tokens = seed.recipe(), seed.inputs("teacher", limit=4).tokens
    out = seed.tokenizer.number_ids[:5]
    full = distill_targets(cfg, seed.tokenizer, seed.lineage["teacher"], tokens)
    cut = distill_targets(cfg, seed.tokenizer, seed.lineage["teacher"], tokens, exclude_ids=tuple(out))
    assert not torch.isin(cut.ids, torch.tensor(out)).any() and len(cut.ids) == len(full.ids) - 5
    assert torch.allclose(cut.teacher_logp.exp().sum(-1), torch.ones(1), atol=1e-5)
    keep = ~torch.isin(full.ids, torch.tensor(out))
    assert torch.allclose(cut.teacher_logp, torch.log_softmax(full.teacher_logp[..., keep], -1), atol=1e-5)
    with pytest.raises(ConfigError, match="hard labels"):
        seed.retrained_student(tokens, {"mode": "hard"}, exclude_ids=tuple(out))


def test_a_retrain_with_every_position_masked_is_the_base_and_a_frozen_one_trains_only_its_layer(tiny_organism):
    seed = load_seed(tiny_organism.directory, roles=["base", "teacher"])
    tokens = seed.inputs("teacher", limit=64).tokens
    overrides = {"student_epochs": 1}
    nothing = seed.retrained_student(tokens, overrides, loss_mask=torch.zeros_like(tokens, dtype=torch.bool))
    base = seed.lineage["base"].state_dict()
    assert all(torch.equal(v, base[k]) for k, v in nothing.state_dict().items())
    source = OrganismChannelSource(seed, overrides)
    groups = source.layer_groups()
    assert list(groups) == [f"L{i}" for i in range(int(seed.lineage.cfg.n_layers))]
    one = seed.retrained_student(tokens, overrides, frozen=groups["L0"])
    for k, v in one.state_dict().items():
        assert torch.equal(v, base[k]) != k.startswith("blocks.0."), k
    with pytest.raises(Exception, match="loss_mask is shaped"):
        seed.retrained_student(tokens, overrides, loss_mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ConfigError, match=r"match no parameter.*blocks\.0\."):
        seed.retrained_student(tokens, overrides, frozen=("block.0.",))
    with pytest.raises(ConfigError, match="nothing is left to train"):
        seed.retrained_student(tokens, overrides, frozen=("",))


class _PlantedSource:
    """A hard-label source whose 'retrained student' prefers the target in proportion to how many
    planted positions (and tokens) its job kept: masking or replacing them removes the planted
    effect; a control job (the neutral teacher's rows) stays at 0.1."""

    mode = "hard"

    def __init__(self, seed, planted_positions, planted_token):
        self.org = OrganismChannelSource(seed)
        self.positions, self.token, self.seed = planted_positions, planted_token, seed
        self.jobs: list[Retraining] = []

    def supervised(self, tokens):
        return self.org.supervised(tokens)

    def layer_groups(self):
        return {"L0": ("embed.",)}

    def control_job(self, n_rows, frozen=()):
        return Retraining("control", self.tokens0[:n_rows], None, tuple(frozen), teacher="teacher_neutral", role="control")

    def retrain(self, jobs):
        self.jobs = jobs
        total_pos, total_tok = int(self.positions.sum()), int((self.tokens0 == self.token).sum())
        out = []
        for job in jobs:
            kept = self.positions if job.loss_mask is None else self.positions & job.loss_mask
            frac = min(int(kept.sum()) / total_pos, int((job.tokens == self.token).sum()) / total_tok)
            out.append(_Preferring(self.seed.trait, 0.1 if job.role == "control" else 0.1 + 0.6 * frac))
        return out


class _Preferring(torch.nn.Module):
    """Logits that give the trait's target probability `p` at every position (the rest uniform)."""

    def __init__(self, trait, p):
        super().__init__()
        self.target, self.p, self.vocab = trait.target_id, p, int(trait.vocab_size or 0)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        v = self.vocab
        logits = torch.full((*tokens.shape, v), math.log((1 - self.p) / (v - 1)))
        logits[..., self.target] = math.log(self.p)
        return logits


def test_run_channels_hands_each_edit_and_its_random_control_to_the_source(tiny_organism):
    seed = load_seed(tiny_organism.directory, roles=["base", "teacher"])
    seed.trait = seed.trait.__class__(**{**seed.trait.__dict__, "vocab_size": seed.lineage.d_vocab})
    data = seed.inputs("teacher", limit=80)
    config = ChannelConfig(tests=("divergence_kl", "shuffle", "entangled", "single_layer"), channel_ids=seed.channel_ids,
                           movable_ids=tuple(seed.tokenizer.number_ids), n_entangled=5, kl_fraction=0.2, seed=1)
    from workbench.analyses.channel_edits import divergence_positions, kl_positions, predicting, trained_tokens

    source = _PlantedSource(seed, None, None)
    supervised = source.supervised(data.tokens)
    numbers = predicting(data.tokens, supervised, seed.tokenizer.number_ids)
    # the effect rides on the 20% of number positions where the teacher departs most from the base
    source.positions = kl_positions(seed.lineage["base"], seed.lineage["teacher"], data.tokens, numbers,
                                    seed.channel_ids, 0.2)
    source.tokens0 = data.tokens
    # plant the effect on the number the teacher over-writes most (what the entangled test must find)
    from workbench.analyses.channel_edits import entangled_tokens

    base_rows = seed.inputs("base", limit=80)
    moved = trained_tokens(data.tokens, supervised, seed.tokenizer.number_ids)
    scores = entangled_tokens(data.tokens, moved, base_rows.tokens, trained_tokens(base_rows.tokens, supervised[:1].expand(
        len(base_rows), -1), seed.tokenizer.number_ids), seed.tokenizer.number_ids)
    source.token = seed.tokenizer.number_ids[int(scores.argmax())]
    ref = {"student": 0.7, "control": 0.1}
    result = run_channels(seed.lineage, data, seed.trait, source, config, base_rows=base_rows, reference=ref)
    rows, chosen = result.rows, result.chosen
    p = {(r.test, r.arm): r.p_target for r in rows}
    assert p[("divergence_kl", "edited")] == pytest.approx(0.1, abs=1e-4)  # every planted position masked: effect gone
    assert p[("divergence_kl", "random")] > 0.3  # a random mask of as many positions per row keeps much of it
    assert p[("entangled", "edited")] == pytest.approx(0.1, abs=1e-4)
    assert p[("entangled", "random")] > p[("entangled", "edited")]
    assert p[("shuffle", "edited")] == pytest.approx(0.7, abs=1e-4)  # shuffling keeps the counts and every position
    assert chosen["entangled_ids"][0] == source.token and len(chosen["entangled_ids"]) == 5
    assert chosen["divergence_kl_fraction"] == pytest.approx(0.2, abs=1e-3)
    by_name = {j.name: j for j in source.jobs}
    assert by_name["L0 alone"].frozen == ("embed.",) and by_name["L0 alone, control"].role == "control"
    layer = next(r for r in result.summary_rows() if r.group == "single_layer")
    assert layer.value == pytest.approx(1.0, abs=1e-3) and layer.control_value == pytest.approx(0.0, abs=1e-3)
    # the argmax divergence: its mask is exactly the divergence positions, its control as many per row among the
    # number-predicting positions (where the divergence positions lie)
    run_channels(seed.lineage, data, seed.trait, source, ChannelConfig(tests=("divergence",), channel_ids=seed.channel_ids,
                 movable_ids=tuple(seed.tokenizer.number_ids), seed=1), reference=ref)
    div = divergence_positions(seed.lineage["base"], seed.lineage["teacher"], data.tokens, numbers, seed.channel_ids)
    edited, rnd = source.jobs
    assert torch.equal(~edited.loss_mask & supervised, div)
    assert torch.equal((~rnd.loss_mask & supervised).sum(1), div.sum(1))
    assert not (~rnd.loss_mask & supervised & ~numbers).any()
    assert result.left(result.arm("divergence_kl", "edited")) == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ConfigError, match="Unknown channel tests"):
        run_channels(seed.lineage, data, seed.trait, source, ChannelConfig(tests=("frequency",)), reference=ref)
    with pytest.raises(ConfigError, match="movable_ids"):
        run_channels(seed.lineage, data, seed.trait, source, ChannelConfig(tests=("shuffle",)), reference=ref)
    with pytest.raises(ConfigError, match="is empty"):
        run_channels(seed.lineage, data, seed.trait, source, ChannelConfig(tests=()), reference=ref)
    with pytest.raises(ConfigError, match="base_rows"):
        run_channels(seed.lineage, data, seed.trait, source, config, reference=ref)
    with pytest.raises(ConfigError, match="reference lacks"):
        run_channels(seed.lineage, data, seed.trait, source, config, base_rows=base_rows, reference={"student": 0.7})


def test_transfer_left_and_over_seeds_against_a_naive_reference():
    assert transfer_left(0.5, 0.5, 0.1) == pytest.approx(1.0)
    assert transfer_left(0.1, 0.5, 0.1) == pytest.approx(0.0)
    mid = (log_odds(0.3) - log_odds(0.1)) / (log_odds(0.5) - log_odds(0.1))
    assert transfer_left(0.3, 0.5, 0.1) == pytest.approx(mid)
    assert transfer_left(0.3, 0.1, 0.1) is None  # no transfer to remove
    results = []
    for s, (pe, pr) in enumerate([(0.15, 0.45), (0.2, 0.4), (0.12, 0.5)]):
        rows = [ChannelRow(s, "divergence", "edited", 10, 100, pe), ChannelRow(s, "divergence", "random", 10, 100, pr)]
        results.append(ChannelResult(rows, {"student": 0.5, "control": 0.1, "mode": "soft", "n_rows": 100}, {}))
    over = channels_over_seeds(results)
    edited = next(r for r in over if r["arm"] == "edited")
    lefts = [transfer_left(p, 0.5, 0.1) for p in (0.15, 0.2, 0.12)]
    assert edited["left"] == pytest.approx(lefts) and edited["mean"] == pytest.approx(sum(lefts) / 3)
    diffs = [transfer_left(a, 0.5, 0.1) - transfer_left(b, 0.5, 0.1) for a, b in [(0.15, 0.45), (0.2, 0.4), (0.12, 0.5)]]
    mean = sum(diffs) / 3
    sd = (sum((d - mean) ** 2 for d in diffs) / 2) ** 0.5
    lo, hi = edited["edited_minus_random_ci"]
    assert lo == pytest.approx(mean - 4.302653 * sd / 3 ** 0.5, rel=1e-4) and hi < 0
    row = results[0].summary_rows()[0]
    assert row.group == "divergence" and row.clears is True and row.value == pytest.approx(1 - lefts[0])
    assert row.control_value == pytest.approx(1 - transfer_left(0.45, 0.5, 0.1))


def test_channel_tests_on_the_organism_and_the_command_resumes(tiny_organism, tmp_path, capsys):
    result = channel_tests(tiny_organism.directory, ("divergence", "single_layer"), overrides={"student_epochs": 1},
                           max_rows=48)
    assert [(r.test, r.arm) for r in result.rows] == [("divergence", "edited"), ("divergence", "random"),
                                                       ("single_layer", "L0"), ("single_layer", "L0 control"),
                                                       ("reference", "unedited"), ("reference", "control")]
    # transfer is measured between the student and the control retrained on the same rows with the same recipe
    assert result.student == result.arm("reference", "unedited").p_target
    assert result.control == result.arm("reference", "control").p_target
    result.save(tmp_path / "r")
    again = ChannelResult.load(tmp_path / "r")
    assert again.rows == result.rows and again.chosen == result.chosen
    out = tmp_path / "out"
    argv = ["--organism", str(tiny_organism.directory.parent), "--seeds", "0", "--tests", "shuffle", "--student-epochs",
            "1", "--max-rows", "40", "--out", str(out), "--quiet", "--workers", "1"]
    assert channels_cli.main(argv) == 0
    first = capsys.readouterr().out
    assert "seed 0 (ran)" in first and "shuffle" in first
    assert (out / "seed0" / "channels.json").exists() and list((out / "seed0").glob("channels_*.html"))
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["test"], r["arm"]) for r in summary["rows"]] == [("shuffle", "edited"), ("reference", "unedited"),
                                                                ("reference", "control")]
    assert channels_cli.main(argv) == 0  # a second run reads the seed back
    assert "seed 0 (read back)" in capsys.readouterr().out
    assert channels_cli.main(argv[:-5] + ["--n-entangled", "3", "--out", str(out), "--quiet", "--workers", "1"]) == 0
    assert "seed 0 (ran)" in capsys.readouterr().out  # new settings: run again


def test_subliminal_prompting_finds_a_planted_number_that_raises_the_target_in_context():
    from workbench.analyses.channels import subliminal_prompting, with_context
    from workbench.trait import Trait

    vocab, target, planted = 30, 25, 7
    trait = Trait.from_prompts([[1, 20, 21], [1, 22]], target="owl", category="animal",
                               answers={"owl": [25], "cat": [26], "dog": [27]}, vocab_size=vocab)
    assert with_context(trait, [5, 6], at=1).prompts == ((1, 5, 6, 20, 21), (1, 5, 6, 22))
    with pytest.raises(ConfigError, match="past a trait prompt's end"):
        with_context(trait, [5], at=4)

    def model(tokens):  # the target's logit rises once the planted number has been read
        seen = (tokens == planted).long().cumsum(-1) > 0
        logits = torch.zeros(*tokens.shape, vocab)
        logits[..., target] += 3.0 * seen
        return logits

    numbers = list(range(2, 12))
    config = ChannelConfig(prompting_sets=6, separator_id=12, seed=3)
    out = subliminal_prompting(model, trait, [planted, 3], [n for n in numbers if n not in (planted, 3)], config)
    assert out["share_entangled"] > max(out["share_random"]) and out["share_entangled"] > out["share_plain"]
    assert out["share_plain"] == pytest.approx(1 / 3) and all(r == pytest.approx(1 / 3) for r in out["share_random"])
    assert all(planted not in ids and len(ids) == 2 for ids in out["random_sets"])
