"""The screening leaderboard: each detector recovers a planted signal and sits at chance on
shuffled labels; drops are handed to the source and compared with a random drop; the command
summarises over seeds and resumes."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.analyses.channel_edits import divergence_positions
from workbench.analyses.detectors import DetectorInputs, run_detectors
from workbench.analyses.leaderboard import (
    DetectorRow,
    LeaderboardConfig,
    LeaderboardResult,
    leaderboard_over_seeds,
    run_leaderboard,
)
from workbench.analyses.probes import auroc
from workbench.cli import screening as screening_cli
from workbench.core.errors import ConfigError, DataError
from workbench.organism.channel_source import OrganismChannelSource
from workbench.organism.load import load_seed


def _planted(seed, n=120, planted_token=None, rate=0.3):
    """n base-written rows, and n copies whose trained numbers are replaced by `planted_token`
    at `rate` (the 'teacher' rows): a planted token-frequency signal."""
    base = seed.inputs("base", limit=2 * n)
    rows_t, rows_b = base.select(list(range(n))), base.select(list(range(n, 2 * n)))
    source = OrganismChannelSource(seed)
    sup = source.supervised(rows_t.tokens)
    from workbench.analyses.channel_edits import trained_tokens

    trained = trained_tokens(rows_t.tokens, sup, seed.tokenizer.number_ids)
    hit = trained & (torch.rand(trained.shape, generator=torch.Generator().manual_seed(0)) < rate)
    tokens = rows_t.tokens.clone()
    tokens[hit] = planted_token
    rows_t.tokens.copy_(tokens)
    return rows_t, rows_b, source


def _inputs(seed, rows_t, rows_b, source):
    from workbench.analyses.leaderboard import _concat

    rows = _concat(rows_t, rows_b)
    labels = torch.arange(len(rows)) < len(rows_t)
    return DetectorInputs(rows, labels, source.supervised(rows.tokens), seed.channel_ids, tuple(seed.tokenizer.number_ids))


def test_text_detectors_recover_a_planted_token_and_sit_at_chance_on_shuffled_labels(tiny_organism):
    seed = load_seed(tiny_organism.directory, roles=["base", "teacher"])
    w = seed.lineage["base"].W_U.detach()
    w = w / w.norm(dim=0, keepdim=True)
    numbers = seed.tokenizer.number_ids
    planted = numbers[int((w[:, numbers].T @ w[:, seed.trait.target_id]).argmax())]  # the number nearest the target
    rows_t, rows_b, source = _planted(seed, planted_token=planted)
    data = _inputs(seed, rows_t, rows_b, source)
    names = ("unembed_similarity", "entangled_frequency", "bag_of_tokens", "random")
    scores = run_detectors(seed.lineage, data, seed.trait, names, seed=1)
    # the frequency detectors read the planted count directly; the unembedding score averages the planted
    # number's similarity with the row's other numbers, so it separates less sharply
    for name, floor in (("unembed_similarity", 0.7), ("entangled_frequency", 0.9), ("bag_of_tokens", 0.9)):
        assert float(auroc(scores[name], data.labels)) > floor, name
    assert abs(float(auroc(scores["random"], data.labels)) - 0.5) < 0.12
    # shuffled labels: cross-fitted detectors learn nothing, fixed ones score the same rows as chance
    perm = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(5))
    shuffled = DetectorInputs(data.rows, data.labels[perm], data.supervised, data.channel_ids, data.movable_ids)
    null = run_detectors(seed.lineage, shuffled, seed.trait, names, seed=1)
    for name in names:
        assert abs(float(auroc(null[name], shuffled.labels)) - 0.5) < 0.12, name


def test_teacher_detectors_against_a_naive_reference_and_real_teacher_rows(tiny_organism):
    seed = load_seed(tiny_organism.directory, roles=["base", "teacher"])
    rows_t, rows_b = seed.inputs("teacher", limit=100), seed.inputs("base", limit=100)
    source = OrganismChannelSource(seed)
    data = _inputs(seed, rows_t, rows_b, source)
    scores = run_detectors(seed.lineage, data, seed.trait, ("divergence_fraction", "oracle", "first_update", "g_trait"),
                           n_random=2)
    tokens, sup = data.rows.tokens, data.supervised
    div = divergence_positions(seed.lineage["base"], seed.lineage["teacher"], tokens, sup, seed.channel_ids)
    assert torch.allclose(scores["divergence_fraction"], div.sum(1).double() / sup.sum(1).double())
    # the oracle: summed channel log-probs of the next tokens, teacher minus base, one row at a time
    ids = torch.tensor(seed.channel_ids)
    for i in (0, 150):
        total = 0.0
        with torch.no_grad():
            lt = torch.log_softmax(seed.lineage["teacher"](tokens[i: i + 1])[0][:, ids].float(), -1)
            lb = torch.log_softmax(seed.lineage["base"](tokens[i: i + 1])[0][:, ids].float(), -1)
        for t in torch.nonzero(sup[i]).flatten().tolist():
            k = seed.channel_ids.index(int(tokens[i, t + 1]))
            total += float(lt[t, k] - lb[t, k])
        assert float(scores["oracle"][i]) == pytest.approx(total, abs=1e-3)
    # the teacher's own rows read as the teacher's (measured: oracle 0.86, first update 0.79, g_trait 0.71; random
    # directions 0.46-0.52), and shuffled labels sit at chance
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    for name in ("oracle", "first_update", "g_trait"):
        assert float(auroc(scores[name], data.labels)) > 0.65, name
        assert abs(float(auroc(scores[name], data.labels[perm])) - 0.5) < 0.12, name
    assert set(scores) >= {"random_direction_0", "random_direction_1"}
    assert all(abs(float(auroc(scores[f"random_direction_{r}"], data.labels)) - 0.5) < 0.12 for r in range(2))
    with pytest.raises(DataError, match="both teacher-written"):
        DetectorInputs(data.rows, torch.ones(200, dtype=torch.bool), sup, None, data.movable_ids)
    with pytest.raises(ConfigError, match="Unknown detectors"):
        run_detectors(seed.lineage, data, seed.trait, ("perplexity",))


class _FrequencySource:
    """A 'student' whose P(target) grows with the planted token's count in the rows it trained on."""

    def __init__(self, org, token):
        self.org, self.token, self.jobs = org, token, []

    def supervised(self, tokens):
        return self.org.supervised(tokens)

    def layer_groups(self):
        return {}

    def retrain(self, jobs):
        from tests.analyses.test_channels import _Preferring

        self.jobs = jobs
        full = max(int((j.tokens == self.token).sum()) for j in jobs)
        return [_Preferring(self.org.seed.trait, 0.1 + 0.6 * int((j.tokens == self.token).sum()) / full) for j in jobs]


def test_leaderboard_drops_each_detectors_top_rows_against_a_random_drop(tiny_organism):
    seed = load_seed(tiny_organism.directory, roles=["base", "teacher"])
    seed.trait = seed.trait.__class__(**{**seed.trait.__dict__, "vocab_size": seed.lineage.d_vocab})
    planted = seed.tokenizer.number_ids[7]
    rows_t, rows_b, org = _planted(seed, planted_token=planted, rate=0.0)
    # plant the token in a quarter of the teacher rows only: a good detector drops exactly those
    tokens = rows_t.tokens.clone()
    from workbench.analyses.channel_edits import trained_tokens

    trained = trained_tokens(tokens, org.supervised(tokens), seed.tokenizer.number_ids)
    trained[30:] = False
    tokens[trained] = planted
    rows_t.tokens.copy_(tokens)
    source = _FrequencySource(org, planted)
    config = LeaderboardConfig(detectors=("bag_of_tokens", "entangled_frequency", "random"), fractions=(0.25,),
                               channel_ids=seed.channel_ids, movable_ids=tuple(seed.tokenizer.number_ids), seed=2)
    ref = {"student": 0.7, "control": 0.1}
    result = run_leaderboard(seed.lineage, rows_t, rows_b, seed.trait, source, config, reference=ref)
    p = {r.detector: r.p_after_drop["0.25"] for r in result.rows}
    assert p["entangled_frequency"] == pytest.approx(0.1, abs=0.05)  # its top quarter is the planted quarter
    assert p["random"] > 0.4
    assert [j.tokens.shape[0] for j in source.jobs] == [90] * 3
    assert set(result.scores) == {"bag_of_tokens", "entangled_frequency", "random"} and len(result.scores["random"]) == 240
    row = next(r for r in result.summary_rows() if r.where == "entangled_frequency" and r.group == "drop 25%")
    assert row.value == pytest.approx(1.0, abs=0.1) and row.clears is True  # it removed (nearly) all the transfer
    with pytest.raises(ConfigError, match="keep 'random'"):
        run_leaderboard(seed.lineage, rows_t, rows_b, seed.trait, source,
                        LeaderboardConfig(detectors=("bag_of_tokens",), movable_ids=config.movable_ids), reference=ref)


def test_over_seeds_beats_flag_and_intervals():
    def result(s, g, bag, rdir, p_g, p_r):
        rows = [DetectorRow(s, "g_trait", "base + trait", g, {"0.1": p_g}), DetectorRow(s, "bag_of_tokens", "labelled rows", bag, {"0.1": p_r}),
                DetectorRow(s, "random", "nothing", 0.5, {"0.1": p_r}), DetectorRow(s, "random_direction_0", "base + trait", rdir)]
        return LeaderboardResult(rows, {"student": 0.6, "control": 0.1, "mode": "hard", "n_rows": 10}, {})

    over = {r["detector"]: r for r in leaderboard_over_seeds([result(0, 0.7, 0.6, 0.5, 0.3, 0.5), result(1, 0.72, 0.65, 0.55, 0.35, 0.55),
                                                              result(2, 0.66, 0.6, 0.4, 0.32, 0.5)])}
    assert over["g_trait"]["beats_bag_and_random_directions_every_seed"] is True
    assert over["bag_of_tokens"]["beats_bag_and_random_directions_every_seed"] is True  # not its own rival
    lo, hi = over["g_trait"]["drops"]["0.1"]["minus_random_ci"]
    assert hi < 0
    worse = leaderboard_over_seeds([result(0, 0.7, 0.6, 0.5, 0.3, 0.5), result(1, 0.6, 0.65, 0.55, 0.35, 0.55)])
    assert worse[0]["beats_bag_and_random_directions_every_seed"] is False
    assert over["random"]["beats_bag_and_random_directions_every_seed"] is None  # a baseline has no verdict
    alone = LeaderboardResult([DetectorRow(0, "oracle", "teacher", 0.8, {}), DetectorRow(0, "random", "nothing", 0.5, {})],
                              {"student": 0.6, "control": 0.1}, {})
    assert leaderboard_over_seeds([alone])[0]["beats_bag_and_random_directions_every_seed"] is None  # no rival scored


def test_leaderboard_command_writes_summarises_and_resumes(tiny_organism, tmp_path, capsys):
    out = tmp_path / "lb"
    argv = ["--leaderboard", "--organism", str(tiny_organism.directory.parent), "--seeds", "0", "--detectors", "bag_of_tokens",
            "random", "--fractions", "0.25", "--student-epochs", "1", "--max-rows", "60", "--out", str(out), "--quiet",
            "--workers", "1"]
    assert screening_cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "seed 0 (ran)" in text and "bag_of_tokens" in text
    summary = json.loads((out / "summary.json").read_text())
    assert [r["detector"] for r in summary["rows"]] == ["bag_of_tokens", "random"]
    assert list((out / "seed0").glob("leaderboard_*.html"))
    saved = LeaderboardResult.load(out / "seed0")
    assert saved.reference["student_retrained"] is True and saved.rows[0].p_after_drop
    assert set(saved.scores) == {"bag_of_tokens", "random"} and len(saved.scores["random"]) == 120
    assert screening_cli.main(argv) == 0
    assert "seed 0 (read back)" in capsys.readouterr().out
    assert screening_cli.main(["--detectors", "random"]) == 2
    assert "go with --leaderboard" in capsys.readouterr().err


def test_divergence_fraction_recovers_planted_divergent_contexts_and_sits_at_chance_on_shuffled_labels():
    """Bigram base and teacher that differ only after token 5: rows with many 5s diverge more."""
    from workbench.analyses.detectors import teacher_scores
    from workbench.core.inputs import Inputs

    gen = torch.Generator().manual_seed(0)
    vocab = 12
    base_table = torch.randn(vocab, vocab, generator=gen)
    teacher_table = base_table.clone()
    teacher_table[5, 3] = base_table[5].max() + 5  # after a 5 the teacher picks 3
    rows = torch.randint(6, vocab, (200, 10), generator=gen)
    planted = torch.rand(100, 10, generator=gen) < 0.4
    rows[:100][planted] = 5  # the "teacher" rows hold many 5s
    inputs = Inputs.from_sequences([[1, 2]] * 200, rows.tolist(), ["teacher"] * 100 + ["base"] * 100,
                                   prompt_ids=list(range(200)))
    labels = torch.arange(200) < 100
    supervised = inputs.attention_mask.clone()
    supervised[:, -1] = False
    data = DetectorInputs(inputs, labels, supervised, None, tuple(range(vocab)))
    scores = teacher_scores(lambda t: base_table[t], lambda t: teacher_table[t], data)["divergence_fraction"]
    assert float(auroc(scores, labels)) > 0.95
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(1))
    assert abs(float(auroc(scores, labels[perm])) - 0.5) < 0.12
