"""`ProbeResult`: probe scores per task, reader model and hook, each beside its controls.

One row per (task, reader, hook, method) with the held-out AUROC (mean and sd over folds),
accuracy and row count. Methods: `logistic` and `ridge` (the probes), `shuffled` (logistic on
permuted labels: chance and its spread), `bag_of_tokens` (a logistic probe on the continuation
token counts: what the text alone gives away), `oracle` (log p_teacher(x) - log p_base(x): what a
perfect reader of the two distributions gets), and for the cross-model task `transfer` (a probe
fitted on teacher-vs-base activations, applied to another model's activations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from workbench.analyses.probes import CVScores, TransferScores, summarise
from workbench.results.base import ResultBase
from workbench.results.rows import SummaryRow

TEXT_READER = "-"  # reader of the controls that read no model's activations


def cv_rows(cv: CVScores, task: str, reader: str, seed: int | None = None) -> list[dict[str, Any]]:
    """Rows of one cross-validated probe sweep (probes and shuffled control) per hook."""
    rows = []
    for hook in cv.hooks:
        for method in cv.auroc:
            auc, auc_sd = summarise(cv.auroc[method][hook])
            acc, acc_sd = summarise(cv.accuracy[method][hook])
            rows.append(dict(task=task, reader=reader, hook=hook, method=method, auroc=auc, auroc_sd=auc_sd,
                             accuracy=acc, accuracy_sd=acc_sd, n=cv.n, seed=seed))
        if cv.shuffled.get(hook) is not None and cv.shuffled[hook].numel():
            per_repeat = cv.shuffled[hook].mean(-1)  # spread across permutations, not folds
            auc, auc_sd = summarise(per_repeat)
            rows.append(dict(task=task, reader=reader, hook=hook, method="shuffled", auroc=auc, auroc_sd=auc_sd,
                             accuracy=None, accuracy_sd=None, n=cv.n, seed=seed, repeats=int(per_repeat.numel())))
    return rows


def control_row(task: str, method: str, fold_aurocs, n: int, reader: str = TEXT_READER,
                hook: str = "text", seed: int | None = None, accuracy=None) -> dict[str, Any]:
    """A row for a control that reads the text (bag of tokens) or both models (oracle)."""
    auc, auc_sd = summarise(fold_aurocs)
    acc, acc_sd = summarise(accuracy) if accuracy is not None else (None, None)
    return dict(task=task, reader=reader, hook=hook, method=method, auroc=auc, auroc_sd=auc_sd,
                accuracy=acc, accuracy_sd=acc_sd, n=n, seed=seed)


def transfer_rows(scores: TransferScores, task: str, seed: int | None = None) -> list[dict[str, Any]]:
    """Rows of a probe applied across models: AUROC vs the negative model and mean P(positive)."""
    return [
        dict(task=task, reader=model, hook=hook, method="transfer", auroc=scores.auroc_vs_neg[model][hook], auroc_sd=None,
             accuracy=None, accuracy_sd=None, teacher_prob=scores.teacher_prob[model][hook], n=scores.n_test, seed=seed)
        for model in scores.teacher_prob
        for hook in scores.hooks
    ]


@dataclass
class ProbeResult(ResultBase):
    """Probe AUROCs per (task, reader, hook, method); see the module docstring for the methods."""

    kind: ClassVar[str] = "probes"
    title: ClassVar[str] = "Linear probes: where can teacher-written data (and teacher-likeness) be read out?"
    rows: list[dict[str, Any]]
    command: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    # ---- views

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r["task"] for r in self.rows))

    def select(self, **where: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows if all(r.get(k) == v for k, v in where.items())]

    def _one(self, **where: Any) -> dict[str, Any] | None:
        found = self.select(**where)
        return found[0] if found else None

    def summary_rows(self) -> list[SummaryRow]:
        """Per task, reader and hook: the logistic probe beside its strongest control, the larger of
        shuffled labels (at that hook) and the bag-of-tokens baseline (the task's text alone: a probe
        of activations that does no better reads nothing the tokens did not say); both ride along,
        with the oracle."""
        out = []
        for task in self.tasks():
            bag = self._one(task=task, method="bag_of_tokens")
            oracle = self._one(task=task, method="oracle")
            for r in self.select(task=task, method="logistic"):
                shuf = self._one(task=task, reader=r["reader"], hook=r["hook"], method="shuffled")
                controls = {"shuffled labels": shuf["auroc"] if shuf else None, "bag of tokens": bag["auroc"] if bag else None}
                defined = {k: v for k, v in controls.items() if v is not None}
                name = max(defined, key=lambda k: defined[k]) if defined else "shuffled labels"
                row = SummaryRow(r["hook"], task, f"probe AUROC, {r['reader']} activations", r["auroc"],
                                 sd=r["auroc_sd"], control=name, control_value=defined.get(name))
                row.details["shuffled_labels"] = controls["shuffled labels"]
                if bag:
                    row.details["bag_of_tokens"] = bag["auroc"]
                if oracle:
                    row.details["oracle"] = oracle["auroc"]
                out.append(row)
            transfer = self.select(task=task, method="transfer")
            for r in transfer:
                if r["reader"] in ("control", "teacher", "base"):
                    continue
                ctrl = self._one(task=task, method="transfer", reader="control", hook=r["hook"])
                teacher = self._one(task=task, method="transfer", reader="teacher", hook=r["hook"])
                control_value = ctrl["auroc"] if ctrl else None
                # teacher-like means: above chance, above the control, and read by a probe that
                # separates the teacher from the base at this hook at all
                clears = r["auroc"] > max(0.5, control_value if control_value is not None else 0.5) and (
                    teacher is None or teacher["auroc"] > 0.6)
                out.append(SummaryRow(r["hook"], task, f"AUROC {r['reader']} vs base, teacher/base probe", r["auroc"],
                                      sd=None, control="control student", control_value=control_value, clears=clears,
                                      details={"teacher_prob": r["teacher_prob"],
                                               "teacher_auroc": teacher["auroc"] if teacher else None}))
        return out

    def figures(self) -> dict[str, Any]:
        """Per task: AUROC per hook, one line per reader, controls dashed or as horizontal lines;
        error bars (sd over folds) where a row has them, the y-axis fitted to every value drawn."""
        import plotly.graph_objects as go

        figs = {}
        for task in self.tasks():
            fig = go.Figure()
            hooks = list(dict.fromkeys(r["hook"] for r in self.select(task=task) if r["reader"] != TEXT_READER
                                       and r["method"] not in ("oracle", "bag_of_tokens")))
            drawn: list[float] = []
            single_fold = with_sd = False
            for method, dash in (("logistic", "solid"), ("ridge", "dot"), ("shuffled", "dash"), ("transfer", "solid")):
                for reader in dict.fromkeys(r["reader"] for r in self.select(task=task, method=method)):
                    rows = {r["hook"]: r for r in self.select(task=task, method=method, reader=reader)}
                    ys = [rows[h]["auroc"] if h in rows else None for h in hooks]
                    sds = [rows[h]["auroc_sd"] if h in rows else None for h in hooks]
                    has_sd = any(sd is not None for sd in sds)
                    single_fold |= not has_sd
                    with_sd |= has_sd
                    err = {"type": "data", "array": [sd or 0 for sd in sds], "visible": True} if has_sd else None
                    fig.add_trace(go.Scatter(x=hooks, y=ys, mode="lines+markers", line={"dash": dash}, error_y=err,
                                             name=f"{method} ({reader})" + ("" if has_sd else ", one held-out fold")))
                    drawn += [y - (sd or 0) for y, sd in zip(ys, sds) if y is not None]
            for method in ("bag_of_tokens", "oracle"):
                r = self._one(task=task, method=method)
                if r and hooks:
                    fig.add_trace(go.Scatter(x=[hooks[0], hooks[-1]], y=[r["auroc"]] * 2, mode="lines",
                                             name=f"{method} ({r['auroc']:.3f})", line={"dash": "longdash", "width": 3}))
                    drawn.append(r["auroc"])
            low = max(0.0, min([0.3, *drawn]) - 0.05)
            spread = "; ".join((["mean ± sd over folds (error bars)"] if with_sd else [])
                               + (["transfer lines: one held-out fold, no interval"] if single_fold else []))
            fig.update_layout(title=f"{self.title}<br><sub>task: {task}; AUROC on held-out prompts, {spread}</sub>",
                              xaxis_title="hook", yaxis_title="AUROC", yaxis_range=[low, 1.02], template="plotly_white")
            figs[task] = fig
        return figs
