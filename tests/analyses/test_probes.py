import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from workbench.core.errors import DataError
from workbench.analyses.probes import (
    ProbeConfig,
    auroc,
    cross_validate,
    grouped_folds,
    pool_positions,
    sequence_log_probs,
    token_counts,
)


def planted(n=1200, d=16, hooks=4, signal_hook=2, shift=4.0, seed=0):
    """Gaussian features per hook; only `signal_hook` separates the classes (mean shift of norm `shift`)."""
    g = torch.Generator().manual_seed(seed)
    groups = torch.arange(n) // 2  # two rows per prompt, as teacher and base continuing one prompt
    y = torch.arange(n) % 2 == 0
    direction = torch.randn(d, generator=g)
    direction = shift * direction / direction.norm()
    scales = torch.rand(d, generator=g) * 3 + 0.1  # unequal feature scales: standardisation matters
    feats = {}
    for h in range(hooks):
        x = torch.randn(n, d, generator=g) * scales + 5.0
        if h == signal_hook:
            x = x + y[:, None].float() * direction * scales
        feats[f"blocks.{h}.hook_resid_post"] = x
    return feats, y, groups


def test_planted_signal_found_at_its_hook_only_and_shuffled_is_chance():
    feats, y, groups = planted()
    cv = cross_validate(feats, y, groups, ProbeConfig(shuffle_repeats=10))
    for method in ("logistic", "ridge"):
        aucs = {h: float(v.mean()) for h, v in cv.auroc[method].items()}
        assert aucs["blocks.2.hook_resid_post"] > 0.95, (method, aucs)
        for h, a in aucs.items():
            if h != "blocks.2.hook_resid_post":
                assert abs(a - 0.5) < 0.08, (method, h, a)
    assert float(cv.accuracy["logistic"]["blocks.2.hook_resid_post"].mean()) > 0.9
    # 10 permutations x 5 folds x 4 hooks of ~240 held-out rows: the mean's sd is ~0.003
    shuffled = torch.stack(list(cv.shuffled.values()))
    assert shuffled.shape == (4, 10, 5)
    assert abs(float(shuffled.mean()) - 0.5) < 0.03
    # the planted hook stays at chance once its labels are permuted
    assert abs(float(cv.shuffled["blocks.2.hook_resid_post"].mean()) - 0.5) < 0.05


def test_torch_probes_agree_with_sklearn():
    feats, y, groups = planted(n=600, d=12, hooks=3, shift=1.0, seed=3)
    cfg = ProbeConfig(C=0.5, ridge_alpha=2.0, shuffle_repeats=0)
    cv = cross_validate(feats, y, groups, cfg)
    folds = cv.folds
    for hook, x in feats.items():
        x, yy = x.numpy(), y.numpy()
        for f in range(cfg.n_folds):
            tr, te = (folds != f).numpy(), (folds == f).numpy()
            scaler = StandardScaler().fit(x[tr])
            lr = LogisticRegression(C=cfg.C, max_iter=5000, tol=1e-8).fit(scaler.transform(x[tr]), yy[tr])
            ridge = Ridge(alpha=cfg.ridge_alpha).fit(scaler.transform(x[tr]), yy[tr].astype(float))
            ref_lr = roc_auc_score(yy[te], lr.decision_function(scaler.transform(x[te])))
            ref_ridge = roc_auc_score(yy[te], ridge.predict(scaler.transform(x[te])))
            assert abs(float(cv.auroc["logistic"][hook][f]) - ref_lr) < 0.01
            assert abs(float(cv.auroc["ridge"][hook][f]) - ref_ridge) < 0.01
            acc = np.mean(lr.predict(scaler.transform(x[te])) == yy[te])
            assert abs(float(cv.accuracy["logistic"][hook][f]) - acc) < 0.02


def test_grouped_folds_never_split_a_prompt_and_are_balanced():
    g = torch.Generator().manual_seed(1)
    groups = torch.randint(0, 300, (2000,), generator=g)
    folds = grouped_folds(groups, 5, seed=7)
    for gid in groups.unique():
        assert folds[groups == gid].unique().numel() == 1
    sizes = torch.bincount(folds, minlength=5)
    assert sizes.min() > 0.8 * sizes.max()
    assert torch.equal(folds, grouped_folds(groups, 5, seed=7))
    with pytest.raises(DataError, match="distinct prompt groups"):
        grouped_folds(torch.zeros(10, dtype=torch.long), 5)


def test_auroc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (3, 200), generator=g).float()
    labels = torch.rand(200, generator=g) < 0.4
    ours = auroc(scores, labels)
    for i in range(3):
        assert float(ours[i]) == pytest.approx(roc_auc_score(labels.numpy(), scores[i].numpy()), abs=1e-6)
    with pytest.raises(DataError, match="both classes"):
        auroc(scores[0], torch.ones(200, dtype=torch.bool))


def test_bad_inputs_are_clear_errors():
    feats, y, groups = planted(n=100)
    with pytest.raises(DataError, match="one class"):
        cross_validate(feats, torch.ones(100, dtype=torch.bool), groups)
    with pytest.raises(DataError, match="expected \\[100, d\\]"):
        cross_validate({"h": torch.randn(99, 3)}, y, groups)
    with pytest.raises(DataError, match="NaN"):
        cross_validate({"h": torch.full((100, 3), float("nan"))}, y, groups)


def test_pooling_counts_and_sequence_log_probs_match_naive():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(3, 5, 4, generator=g)
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    pooled = pool_positions(acts, mask)
    for i in range(3):
        assert torch.allclose(pooled[i], acts[i][mask[i]].mean(0))
    tokens = torch.randint(0, 7, (3, 5), generator=g)
    counts = token_counts(tokens, mask, 7)
    for i in range(3):
        assert counts[i].tolist() == torch.bincount(tokens[i][mask[i]], minlength=7).float().tolist()
    logits = torch.randn(3, 5, 7, generator=g)
    lp = sequence_log_probs(logits, tokens, mask)
    for i in range(3):
        naive = sum(torch.log_softmax(logits[i, t - 1], -1)[tokens[i, t]] for t in range(1, 5) if mask[i, t])
        assert float(lp[i]) == pytest.approx(float(naive), abs=1e-5)


def test_cross_model_rows_clear_only_above_chance_control_and_a_working_probe():
    from workbench.analyses.probe_result import ProbeResult

    def row(reader, hook, auroc):
        return dict(task="cross_model", reader=reader, hook=hook, method="transfer", auroc=auroc, auroc_sd=None,
                    accuracy=None, accuracy_sd=None, teacher_prob=0.5, n=100, seed=0)

    rows = [row("teacher", "h_good", 0.95), row("student", "h_good", 0.90), row("control", "h_good", 0.30),
            row("teacher", "h_below", 0.95), row("student", "h_below", 0.45), row("control", "h_below", 0.40),
            row("teacher", "h_blind", 0.50), row("student", "h_blind", 0.90), row("control", "h_blind", 0.30)]
    summary = {r.where: r.clears for r in ProbeResult(rows).summary_rows() if r.group == "cross_model"}
    # below chance is never teacher-like, and a probe that cannot tell teacher from base reads nothing
    assert summary == {"h_good": True, "h_below": False, "h_blind": False}
