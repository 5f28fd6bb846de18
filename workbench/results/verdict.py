"""The report's answer first: where the trait lives, generated from the summary rows alone.

`make_verdict(sections)` reads each section's `kind` and summary rows (the Result contract:
`where`, `value`, `control_value`, `clears`, `sd`/`ci`, `n_seeds`) and nothing section-specific
beyond `EVIDENCE`, which says which kinds are causal (they change the model and watch the trait)
and which correlational. It names the places (layer x component, `results/places.py`) where a
causal row clears its control, with an interval (or over seeds), what the correlational views
add there and elsewhere, what did not clear, and the caveats: how many rows were compared and
starred, and over how many seeds. Places supported only by single-seed point values are named as
such, never as cleared.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.results.places import Place, place_of
from workbench.results.stars import Star, margin, n_seeds, number, star

EVIDENCE = {
    "delta_patching": "causal", "activation_patching": "causal",
    "weights": "correlational", "compare": "correlational", "compare_seeds": "correlational",
    "probes": "correlational", "directions": "correlational", "alignment": "correlational",
    "screening": "causal",
}  # fmt: skip
"""Section kind -> the kind of evidence its rows are (unknown kinds count as correlational)."""

FALSE_CLEAR_RATE = 0.025
"""The share of null comparisons expected to clear by chance: each star is a one-sided test at about
2.5% (value - 2 sd, an interval's lower end, or the 95% t interval over seeds, above the control)."""


@dataclass(frozen=True)
class Evidence:
    """One summary row as evidence: its section, place (None: not a place), standing and margin."""

    section: str
    kind: str
    causal: bool
    row: dict[str, Any]
    place: Place | None
    star: Star

    @property
    def margin(self) -> float:
        return margin(self.row)

    def brief(self) -> str:
        """`section where value vs control_value` (group when the section has several)."""
        v, c = number(self.row.get("value")), number(self.row.get("control_value"))
        value = f"{v:.3f}" if v is not None else "n/a"
        ctrl = f" vs {c:.3f}" if c is not None else ""
        return f"{self.section} {self.row.get('where', '?')} {value}{ctrl}"


def evidence_of(sections: Sequence[dict[str, Any]]) -> list[Evidence]:
    """Every summary row of every section as Evidence."""
    out = []
    for s in sections:
        causal = EVIDENCE.get(s.get("kind", ""), "correlational") == "causal"
        for row in s.get("summary_rows", []):
            out.append(Evidence(s["id"], s.get("kind", ""), causal, row, place_of(str(row.get("where", ""))), star(row)))
    return out


@dataclass
class Verdict:
    """The answer: places by causal evidence, what the correlational views add, caveats."""

    seeds: int
    causal: dict[Place, list[Evidence]]  # places where a causal row is starred, strongest first
    tentative: dict[Place, list[Evidence]]  # places where a causal row clears on a single-seed point value only
    correlational: dict[Place, list[Evidence]]  # places where a correlational row is starred
    unplaced: list[Evidence]  # starred or single-seed rows about no place (whole model, data)
    n_rows: int
    n_compared: int  # rows with a control
    n_starred: int
    n_single: int
    causal_failed: list[Evidence]
    missing: list[str] = field(default_factory=list)

    @property
    def seeds_phrase(self) -> str:
        return f"over {self.seeds} seeds" if self.seeds > 1 else "one seed: no interval over seeds"

    def lines(self, width: int = 120) -> list[str]:
        """The verdict as text lines (at most `width` columns; a sentence's continuation indented)."""
        return wrap(self.sentences(), width)

    def sentences(self) -> list[str]:
        """The heading, then one sentence per point (what report.json stores and index.html lists)."""
        out = [f"VERDICT: where does the trait live? ({self.seeds_phrase})"]

        def say(text: str) -> None:
            out.append(text)

        if self.causal:
            say("Causal evidence that clears its control: " + _places(self.causal, 3) + ".")
        else:
            say("No causal row clears its control with an interval" + ("." if self.seeds > 1 else
                                                                       " (one seed: no interval)."))
        if self.tentative:
            say("Single seed, no interval (point value above its control, not a star): " + _places(self.tentative, 3) + ".")
        anchored = set(self.causal) | set(self.tentative)
        agree = {p: e for p, e in self.correlational.items() if p in anchored}
        elsewhere = {p: e for p, e in self.correlational.items() if p not in anchored}
        if agree:
            say("Correlational views agreeing there: " + "; ".join(
                f"{p.label} ({', '.join(dict.fromkeys(e.section for e in ev))})" for p, ev in agree.items()) + ".")
        if elsewhere:
            say("Correlational views also point at (no causal support): " + _places(elsewhere, 5, names_only=True) + ".")
        if not self.correlational:
            say("No correlational row clears its control with an interval.")
        if self.unplaced:
            say("Whole model and data: " + "; ".join(
                e.brief() + ("" if e.star is Star.CLEARS else " (single seed)") for e in self.unplaced[:2])
                + (f"; +{len(self.unplaced) - 2} more" if len(self.unplaced) > 2 else "") + ".")
        if self.causal_failed:
            places = list(dict.fromkeys(e.place.label for e in self.causal_failed if e.place is not None))
            say(f"Did not clear: {len(self.causal_failed)} causal rows"
                + (f" (e.g. {', '.join(places[:4])})" if places else "") + ".")
        expected = self.n_compared * FALSE_CLEAR_RATE
        say(f"Caveats: {self.n_starred} of {self.n_rows} rows starred ({self.n_compared} compared with a control; "
            f"~{expected:.0f} would clear by chance, each star a one-sided test at about 2.5%); {self.n_single} clear on a single-seed point value only; "
            + (f"{self.seeds} seeds." if self.seeds > 1 else "one seed: no interval over seeds (rerun over seeds).")
            + (f" Missing sections: {', '.join(self.missing)}." if self.missing else ""))
        return out

    def text(self, width: int = 120) -> str:
        return "\n".join(self.lines(width))


def wrap(sentences: Sequence[str], width: int = 120) -> list[str]:
    """Sentences as lines of at most `width` columns, continuations indented."""
    return [line for text in sentences for line in textwrap.wrap(text, width, subsequent_indent="    ")]


def _places(by_place: dict[Place, list[Evidence]], limit: int, names_only: bool = False) -> str:
    items = []
    for p, ev in list(by_place.items())[:limit]:
        if names_only:
            items.append(f"{p.label} ({', '.join(dict.fromkeys(e.section for e in ev))})")
        else:
            others = list(dict.fromkeys(e.section for e in ev[1:] if e.section != ev[0].section))
            items.append(f"{p.label} ({ev[0].brief()}" + (f"; also {', '.join(others)}" if others else "") + ")")
    more = f", +{len(by_place) - limit} more" if len(by_place) > limit else ""
    return ", ".join(items) + more


def _by_place(evidence: list[Evidence]) -> dict[Place, list[Evidence]]:
    """Evidence grouped by place; places ordered by their strongest margin, evidence likewise."""
    groups: dict[Place, list[Evidence]] = {}
    for e in sorted(evidence, key=lambda e: -e.margin):
        if e.place is not None:
            groups.setdefault(e.place, []).append(e)
    return groups


def make_verdict(sections: Sequence[dict[str, Any]], missing: Sequence[str] = ()) -> Verdict:
    """The verdict of a report's sections ({id, kind, summary_rows}); `missing` names absent sections."""
    ev = evidence_of(sections)
    causal = [e for e in ev if e.causal]
    corr = [e for e in ev if not e.causal]
    return Verdict(
        seeds=max((n_seeds(e.row) for e in ev), default=1),
        causal=_by_place([e for e in causal if e.star is Star.CLEARS]),
        tentative=_by_place([e for e in causal if e.star is Star.SINGLE]),
        correlational=_by_place([e for e in corr if e.star is Star.CLEARS]),
        unplaced=sorted([e for e in ev if e.place is None and e.star in (Star.CLEARS, Star.SINGLE)],
                        key=lambda e: (e.star is not Star.CLEARS, not e.causal, -e.margin)),
        n_rows=len(ev),
        n_compared=sum(e.star is not Star.NO_CONTROL for e in ev),
        n_starred=sum(e.star is Star.CLEARS for e in ev),
        n_single=sum(e.star is Star.SINGLE for e in ev),
        causal_failed=[e for e in causal if e.star is Star.FAILS],
        missing=list(missing),
    )


def section_line(section: dict[str, Any]) -> str:
    """One line per section: how many rows clear, and its strongest row beside its control."""
    ev = evidence_of([section])
    starred = [e for e in ev if e.star is Star.CLEARS]
    single = [e for e in ev if e.star is Star.SINGLE]
    pool = starred or single or [e for e in ev if e.star is not Star.NO_CONTROL] or ev
    if not ev:
        return f"{section['id']}: no summary rows"
    best = max(pool, key=lambda e: e.margin)
    mark = {Star.CLEARS: "* ", Star.SINGLE: "° ", Star.FAILS: "(not clearing) "}.get(best.star, "")
    group = f" [{best.row.get('group')}]" if best.row.get("group") else ""
    extra = f" ({len(single)} single-seed °)" if single else ""
    return f"{section['id']}: {len(starred)} of {len(ev)} rows clear{extra}; strongest: {mark}{best.brief().split(' ', 1)[1]}{group}"
