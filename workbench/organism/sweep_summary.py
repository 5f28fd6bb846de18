"""The sweep's rows summarised per organism (channel) and regime over seeds, as a table and a
figure: transfer (the student's log-odds gain over its control, 95% t interval over seeds) against
LoRA rank, one line per optimiser, full fine-tuning as its own point."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from workbench.results.seeds import over_seeds, paired_interval


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (organism, regime): seeds, the chosen rate, per-seed P(target) and Wilson
    intervals of student and control, the gain per seed with its mean, sd and interval, the final
    losses, cos(dS, dT) of student and control, and the first-order prediction (first seed)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["organism"], r["label"]), []).append(r)
    out = []
    for (organism, label), rs in groups.items():
        lo_s = [r["student"]["log_odds"] for r in rs]
        lo_c = [r["control"]["log_odds"] for r in rs]
        gains = [None if s is None or c is None else s - c for s, c in zip(lo_s, lo_c)]  # None: a diverged cell
        stats = over_seeds(gains)
        ctx_s = [r["student"].get("log_odds_in_context") for r in rs]
        ctx_c = [r["control"].get("log_odds_in_context") for r in rs]
        ctx_gains = [None if s is None or c is None else s - c for s, c in zip(ctx_s, ctx_c)]
        ctx_stats = over_seeds(ctx_gains)
        fo = rs[0]["student"].get("first_order")
        out.append({
            "organism": organism, "channel": rs[0].get("channel"), "regime": rs[0]["regime"], "label": label,
            "seeds": [r["seed"] for r in rs], "lr": rs[0]["lr"], "lr_losses": rs[0]["lr_losses"],
            "lr_at_edge": lr_at_edge(rs[0]["lr"], rs[0]["lr_losses"]), "lr_tie": lr_tie(rs[0]["lr_losses"]),
            "p_student": [r["student"]["p_target"] for r in rs], "p_control": [r["control"]["p_target"] for r in rs],
            "wilson_student": [r["student"]["wilson"] for r in rs], "wilson_control": [r["control"]["wilson"] for r in rs],
            "gain": gains, "gain_mean": stats.mean, "gain_sd": stats.sd, "gain_ci": paired_interval(lo_s, lo_c),
            "gain_in_context": ctx_gains, "gain_in_context_mean": ctx_stats.mean,
            "gain_in_context_ci": paired_interval(ctx_s, ctx_c),
            "final_loss_student": [r["student"]["final_loss"] for r in rs],
            "final_loss_control": [r["control"]["final_loss"] for r in rs],
            "trained": all(r["student"]["trained"] and r["control"]["trained"] for r in rs),
            "unfit_seeds": unfit_seeds([r["seed"] for r in rs], [r["student"]["final_loss"] for r in rs]),
            "cos_student": [r["student"]["cos_teacher"]["whole"] for r in rs],
            "cos_control": [r["control"]["cos_teacher"]["whole"] for r in rs],
            "first_order": None if fo is None else {"predicted": fo["predicted"][0], "measured": fo["measured"][0]},
        })
    return out


def lr_at_edge(lr: float, lr_losses: dict[str, float]) -> bool:
    """Whether the chosen rate is the smallest or largest of a grid of two or more: the loss might
    fall further outside it (widen the grid with --lr-grid).

    >>> lr_at_edge(1e-3, {"0.001": 0.1, "0.003": 0.2}), lr_at_edge(3e-3, {"0.001": 0.2, "0.003": 0.1, "0.01": 0.3})
    (True, False)
    """
    rates = sorted(float(k) for k in lr_losses)
    return len(rates) >= 2 and lr in (rates[0], rates[-1])


def _finite(xs: Iterable[float | None]) -> list[float]:
    """The finite values (None, NaN and inf: a diverged cell or a missing number)."""
    return [x for x in xs if x is not None and math.isfinite(x)]


UNFIT_RATIO = 100.0
"""A student whose final loss exceeds the regime's best seed's this many times did not fit its data."""


def unfit_seeds(seeds: Sequence[int], final_losses: Sequence[float | None], ratio: float = UNFIT_RATIO) -> list[int]:
    """Seeds whose student ended at more than `ratio` times the regime's lowest final loss over
    seeds: at the rate the control chose, that student failed to fit its data (e.g. SGD at a high
    rate on one seed), so its gain reads "did not train", not "no transfer".

    >>> unfit_seeds([0, 1, 2], [3e-4, 0.71, 3e-4]), unfit_seeds([0, 1, 2], [1.78, 1.68, 1.89])
    ([1], [])
    """
    finite = _finite(final_losses)
    if len(finite) < 2 or min(finite) <= 0:
        return []
    return [s for s, x in zip(seeds, final_losses) if x in finite and x > ratio * min(finite)]


TIE_SPREAD = 0.005
"""A runner-up rate whose final loss lies within this relative spread of the chosen one's ties with it."""


def lr_tie(lr_losses: dict[str, float], spread: float = TIE_SPREAD) -> bool:
    """Whether the grid's second-lowest finite final loss lies within `spread` (relative) of the
    lowest: the loss does not resolve the rate (e.g. hard labels, whose loss sits near the sampling
    entropy), and the choice between them is close to arbitrary.

    >>> lr_tie({"0.001": 1.7820, "0.003": 1.7825, "0.01": 2.5}), lr_tie({"0.001": 2e-5, "0.003": 1e-5}), lr_tie({"0.001": 1.0})
    (True, False, False)
    """
    finite = sorted(_finite(lr_losses.values()))
    return len(finite) >= 2 and finite[0] > 0 and (finite[1] - finite[0]) / finite[0] < spread


def _flag(e: dict[str, Any]) -> str:
    if not e["trained"]:
        return " (DIVERGED)"
    unfit = e.get("unfit_seeds") or []
    return f" (unfit: seed {','.join(map(str, unfit))})" if unfit else ""


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _mean(xs: Sequence[float | None]) -> float | None:
    """The mean of the finite values (None and NaN: a diverged cell), None when there is none."""
    kept = _finite(xs)
    return sum(kept) / len(kept) if kept else None


def format_table(summary: Sequence[dict[str, Any]], lr_by: str = "control") -> str:
    """The summary as text, one line per organism and regime (a regime that diverged, or a seed whose
    student did not fit its data, is named beside the regime)."""
    wide = max([22, *(len(e["label"] + _flag(e)) for e in summary)])
    lines = [f"learning rate per regime: the grid's lowest final training loss of the {lr_by.upper()} student on the "
             "first seed (never chosen by transfer); ^ marks a rate at the grid's edge, ~ a runner-up rate whose loss lies "
             f"within {TIE_SPREAD:.1%} of the chosen one's (the loss does not resolve the rate); unfit: a seed whose student "
             f"ended above {UNFIT_RATIO:g}x the regime's lowest final loss (it did not train)",
             f"{'channel':<8} {'regime':<{wide}} {'lr':>9} {'gain (student - control log-odds) per seed':<43} {'mean [95% t]':<24} "
             f"{'in context':<11} {'P student / control (mean)':<27} {'final loss s / c':<18} {'cos(dS,dT) s / c':<18} "
             "first step pred / meas"]
    for e in summary:
        ci = e["gain_ci"]
        per = " / ".join(_f(g, "+.2f") for g in e["gain"])
        mean = f"{_f(e['gain_mean'], '+.2f')}" + ("" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]")
        ps, pc = _mean(e["p_student"]), _mean(e["p_control"])
        ls, lc = _mean(e["final_loss_student"]), _mean(e["final_loss_control"])
        cs = [c for c in e["cos_student"] if c is not None]
        cc = [c for c in e["cos_control"] if c is not None]
        fo = e["first_order"]
        line = (f"{(e['channel'] or ''):<8} {e['label'] + _flag(e):<{wide}} {e['lr']:>7.0e}{'^' if e.get('lr_at_edge') else ' '}{'~' if e.get('lr_tie') else ' '} "
                f"{per:<43} {mean:<24} {_f(e.get('gain_in_context_mean'), '+.2f'):<11} {_f(ps)} / {_f(pc)}{'':<13} "
                f"{_f(ls, '.4f')} / {_f(lc, '.4f')}  "
                f"{_f(sum(cs) / len(cs) if cs else None, '+.2f')} / {_f(sum(cc) / len(cc) if cc else None, '+.2f')}{'':<6} "
                + ("n/a" if fo is None else f"{fo['predicted']:+.2e} / {fo['measured']:+.2e}"))
        lines.append(line)
    return "\n".join(lines)


def sweep_figure(summary: Sequence[dict[str, Any]]) -> Any:
    """Transfer vs LoRA rank, one line per optimiser and a panel per channel; full fine-tuning at
    the right as its own point; error bars: the 95% t interval over seeds."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    channels = list(dict.fromkeys(e["organism"] for e in summary))
    fig = make_subplots(rows=1, cols=len(channels), shared_yaxes=True,
                        subplot_titles=[next(e["channel"] or o for e in summary if e["organism"] == o) for o in channels])
    colours = {"adam": "#1f77b4", "adamw": "#2ca02c", "sgd": "#d62728", "signsgd": "#9467bd"}
    for col, organism in enumerate(channels, start=1):
        for opt in dict.fromkeys(e["regime"]["optimizer"] for e in summary):
            pts = [e for e in summary if e["organism"] == organism and e["regime"]["optimizer"] == opt]
            pts.sort(key=lambda e: (e["regime"]["students"] == "full", e["regime"]["r"] or 0))
            x = ["full" if e["regime"]["students"] == "full" else str(e["regime"]["r"]) for e in pts]
            y = [e["gain_mean"] for e in pts]
            err = [0.0 if e["gain_ci"] is None else (e["gain_ci"][1] - e["gain_ci"][0]) / 2 for e in pts]
            fig.add_trace(go.Scatter(x=x, y=y, error_y={"type": "data", "array": err}, mode="lines+markers", name=opt,
                                     legendgroup=opt, showlegend=col == 1, line={"color": colours.get(opt)}), 1, col)
        fig.add_hline(y=0, line_dash="dot", row=1, col=col)
        fig.update_xaxes(title_text="LoRA rank (full: full fine-tuning)", type="category", row=1, col=col)
    fig.update_yaxes(title_text="transfer: log-odds gain over the control", row=1, col=1)
    fig.update_layout(title="Transfer by training regime (mean over seeds, 95% t interval)")
    return fig


def curves_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """Curves over training, one line per regime and seed (student solid, control dashed): P(target),
    cos(dS_t, dT), the cosine of the alignment of the next step with the trait gradient, and the
    activation shift's cosine with the teacher's (EAS)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = (("p_target", "P(target)"), ("cos_teacher", "cos(dS_t, dT)"), ("alignment_cos", "cos(-grad L, grad log P)"),
              ("shift_cos", "cos(v_S, v_T): activation shift (EAS)"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels])
    palette = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    labels = list(dict.fromkeys(f"{r.get('channel') or ''} {r['label']}".strip() for r in rows))
    for r in rows:
        label = f"{r.get('channel') or ''} {r['label']}".strip()
        colour = palette[labels.index(label) % len(palette)]
        for role, dash in (("student", "solid"), ("control", "dash")):
            curve = r[role].get("curve")
            if not curve:
                continue
            steps = [p["step"] for p in curve]
            for col, (field, _) in enumerate(panels, start=1):
                fig.add_trace(go.Scatter(x=steps, y=[p.get(field) for p in curve], mode="lines",
                                         line={"color": colour, "dash": dash, "width": 1.5},
                                         name=f"{label} {role} (seed {r['seed']})", legendgroup=label,
                                         showlegend=col == 1), 1, col)
    fig.update_xaxes(title_text="optimiser step")
    fig.update_layout(title="Transfer over training (solid: student; dashed: control)")
    return fig


__all__ = ["curves_figure", "format_table", "summarize", "sweep_figure"]
