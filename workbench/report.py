"""The localisation report: `report.json`, one HTML file per figure, `index.html`, a terminal summary.

`write_report` walks the results it is given through the `Result` contract only (kind, title,
command, save, figures, summary_rows), so a new analysis adds a section without touching the
others. Each section's result files go to `<out>/sections/<id>/`, its figures to `<out>/<id>_<name>.html`
(offline: one `plotly.min.js` beside them), and `report.json` records every section's summary
rows, where its files are and the command that regenerates it, and `missing` lists the sections
that have no result ({section, reason}: skipped, or failed with its error; index.html and the
summary name them too).

Summary rows (`workbench.results.rows.SummaryRow`, stored as their flat `to_dict()`), one per
(where, group): the strongest evidence there beside its control. The report reads these keys
when present (others are kept, listed as details):
`where` (hook, parameter group or layer), `group` (a sub-analysis of the section, e.g. a probe
task), `measure` (what the value is, with its unit), `value`, `sd` or `ci` ([lo, hi]) for its
uncertainty, `control` (name of the baseline), `control_value` (the baseline's value in the same
unit) and `clears` (bool: whether the value clears its control, when the section has its own
rule; otherwise the interval's lower end, value - 2 sd, or the value must exceed the control).
Rows aggregated over seeds add `n_seeds` and `seed_values` (`value` the mean, `sd` over seeds,
`clears` in every seed, firmly: `results/seed_rows.clears_over_seeds`). A row is starred only when it clears its control with an interval or
over seeds (`results/stars.py`); the section names its strongest fair control.

The report answers first: a verdict generated from the rows alone (`results/verdict.py`: where
causal evidence clears its control, what the correlational views add, what did not clear, the
caveats), then the map (`results/map_figure.py`: layers x components, which sections point
where), then per section its key figure with a one-line finding; the full evidence table (per
`where`, section and group, the row furthest above its control, in forward order) comes last,
collapsible and filterable in index.html and in `summary.txt`. The terminal prints the verdict
and one line per section (the full table too with `full_table=True`).
"""

from __future__ import annotations

import math
import os
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from workbench.core.errors import ConfigError
from workbench.core.io import atomic_write_json, atomic_write_text, read_json
from workbench.core.provenance import SCHEMA_VERSION, package_versions
from workbench.results.base import Result
from workbench.results.figures import figure_stem, write_figures
from workbench.results.map_figure import map_figure
from workbench.results.report_html import index_html
from workbench.results.row_text import fmt as _fmt
from workbench.results.row_text import measure_of as _measure
from workbench.results.row_text import where_of as _where
from workbench.results.rows import row_dict
from workbench.results.stars import LEGEND, MARK, Star, clears, star, uncertainty  # noqa: F401 (clears: public here)
from workbench.results.stars import margin as _margin
from workbench.results.verdict import make_verdict, section_line, wrap

REPORT_FILE = "report.json"
INDEX_FILE = "index.html"
SUMMARY_FILE = "summary.txt"
MAP_STEM = "map"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and inf become None, tuples lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def section_ids(results: Sequence[Result]) -> list[str]:
    """The report's section ids of one run's results: kind, then kind-2, kind-3, ... for repeats."""
    seen: dict[str, int] = {}
    ids = []
    for r in results:
        seen[r.kind] = seen.get(r.kind, 0) + 1
        ids.append(r.kind if seen[r.kind] == 1 else f"{r.kind}-{seen[r.kind]}")
    return ids


_FIRST = ("hook_embed", "hook_pos_embed", "embed", "pos_embed", "tokens")
_LAST = ("ln_final", "unembed", "final")


def depth(where: str) -> float:
    """Forward order of a hook, parameter group or layer label: embeddings first, then blocks by
    index ("blocks.3....", "layer 3", "L3 ..."), then the final norm and unembedding, then
    whole-model rows and anything unrecognised."""
    m = re.match(r"(?:blocks\.|layer |L)(\d+)\b", where)
    if m:
        return float(m.group(1))
    head = where.split(" + ")[0].split(".")[0]
    if head in _FIRST or where.startswith("hook_"):
        return -1.0
    if head in _LAST or where.startswith("ln_final"):
        return 1e6
    return 1e6 + 1


def strongest_rows(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (where, section, group): the summary row furthest above its control; rows in forward
    order of `where` (embeddings, blocks, final, whole model), hooks before parameter groups, then
    first-seen order."""
    best: dict[tuple[str, str, str], dict[str, Any]] = {}
    for section in sections:
        for row in section["summary_rows"]:
            key = (_where(row), section["id"], str(row.get("group", "")))
            if key not in best or _margin(row) > _margin(best[key]):
                best[key] = {**row, "section": section["id"]}
    first = {w: i for i, w in enumerate(dict.fromkeys(k[0] for k in best))}
    return sorted(best.values(), key=lambda r: (depth(_where(r)), "hook_" not in _where(r), first[_where(r)]))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _tags(rows: list[dict[str, Any]]) -> list[str]:
    """`section/group`, or just `section` where the section has one group only."""
    groups: dict[str, set[str]] = {}
    for r in rows:
        groups.setdefault(r["section"], set()).add(str(r.get("group", "")))
    return [r["section"] + (f"/{r['group']}" if len(groups[r["section"]]) > 1 and r.get("group") not in (None, "") else "")
            for r in rows]


def format_summary(sections: list[dict[str, Any]], width: int = 120) -> str:
    """Terminal table, `width` columns at most: per layer/component (a heading line each) the
    strongest evidence of every section and group, its value (± sd or half interval) beside its
    control's; `*` marks a value that clears its control with an interval, `°` one that clears on a
    single-seed point value only (`workbench.results.stars`)."""
    rows = strongest_rows(sections)
    if not rows:
        return "(no summary rows)"
    tags = _tags(rows)
    tag_w = min(28, max(len(t) for t in tags))
    controls = [_fit(str(r.get("control", "")), 22) for r in rows]
    ctrl_w = max(len("control is"), *(len(c) for c in controls))
    fixed = 2 + tag_w + 2 + 2 + 7 + 7 + 2 + 7 + 2 + ctrl_w  # indent, tag, gaps, value, ±, mark, control value, name
    measure_w = max(20, width - fixed)
    head = f"  {'section':<{tag_w}}  {'evidence':<{measure_w}}  {'value':>7}{'':<7}  {'control':>7}  control is"
    lines = [head.rstrip(), "-" * min(width, fixed + measure_w)]
    where = None
    for r, tag, ctrl in zip(rows, tags, controls):
        if _where(r) != where:
            where = _where(r)
            lines.append(_fit(where, width))
        u = uncertainty(r)
        mark = MARK[star(r)] or " "
        value = _fmt(r.get("value"))
        measure = textwrap.wrap(_measure(r, r["section"]), measure_w) or [""]
        lines.append(f"  {_fit(tag, tag_w):<{tag_w}}  {measure[0]:<{measure_w}}  {value:>7}"
                     f"{'±' + format(u, '.3f') if u is not None else '':<7}{mark} "
                     f"{_fmt(r.get('control_value')) if 'control_value' in r else '':>7}  {ctrl}")
        lines += [f"  {'':<{tag_w}}    {more}" for more in measure[1:]]
    lines += textwrap.wrap("± sd, or half the interval; " + LEGEND + ".", width)
    return "\n".join(line.rstrip() for line in lines)


def format_terminal(report: dict[str, Any], full: bool = False, width: int = 120) -> str:
    """What the job prints: the verdict, one line per section, then (with `full`) the full table."""
    lines = [*wrap(report.get("verdict", []), width), "", "Sections (rows clearing their control; the strongest):"]
    lines += ["  " + textwrap.shorten(s["finding"], width - 2, placeholder=" ~") for s in report["sections"]]
    for m in report.get("missing", []):
        lines.append(f"  missing section {m['section']}: {m['reason']}")
    if full:
        lines += ["", format_summary(report["sections"], width)]
    return "\n".join(lines)


def write_report(
    results: Sequence[Result],
    out_dir: str | os.PathLike,
    *,
    command: str = "",
    title: str = "workbench: where does the hidden signal live?",
    meta: dict[str, Any] | None = None,
    missing: Sequence[Mapping[str, str]] = (),
    stream: TextIO | None = sys.stdout,
    full_table: bool = False,
) -> Path:
    """Write every result's files, figures, the map, `report.json`, `summary.txt` and `index.html`;
    print the verdict and one line per section (and the full table with `full_table`).

    `missing` lists the sections that have no result ({section, reason}: skipped, or failed with
    its error): report.json, index.html and the summary say which and why. Returns the path of
    `report.json`. `stream=None` prints nothing. `summary.txt` always holds the full table.
    """
    if not results and not missing:
        raise ConfigError("No results to report; run at least one analysis.")
    missing = [{"section": str(m["section"]), "reason": str(m["reason"])} for m in missing]
    for r in results:
        if not isinstance(r, Result):
            raise ConfigError(f"{type(r).__name__} does not follow the Result contract (workbench/results/base.py).")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    used_names: set[str] = {MAP_STEM}
    for sid, result in zip(section_ids(results), results):
        result_path = result.save(out / "sections" / sid)
        figures = result.figures()
        named = {}
        for name, fig in figures.items():
            file_stem = figure_stem(sid, name)  # the file says which section it shows
            while file_stem in used_names:
                file_stem += "_"
            used_names.add(file_stem)
            named[file_stem] = (name, fig)
        paths = write_figures({stem: fig for stem, (_, fig) in named.items()}, out)
        sections.append({
            "id": sid, "kind": result.kind, "title": result.title, "command": result.command,
            "files": {"result": result_path.relative_to(out).as_posix(),
                      "figures": {named[stem][0]: p.relative_to(out).as_posix() for stem, p in paths.items()}},
            "summary_rows": _clean([row_dict(row) for row in result.summary_rows()]),
        })
    for s in sections:
        s["finding"] = section_line(s)
    verdict = make_verdict(sections, [m["section"] for m in missing])
    report = {"schema_version": SCHEMA_VERSION, "title": title, "command": command, "versions": package_versions(),
              "meta": _clean(meta or {}), "verdict": verdict.sentences(),
              "stars": {"rows": verdict.n_rows, "compared": verdict.n_compared, "starred": verdict.n_starred,
                        "single_seed": verdict.n_single, "seeds": verdict.seeds},
              "sections": sections, "strongest": strongest_rows(sections), "missing": missing}
    fig = map_figure(sections, verdict.seeds_phrase)
    if fig is not None:
        path = write_figures({MAP_STEM: fig}, out)[MAP_STEM]
        report["map"] = path.relative_to(out).as_posix()
        report["map_height"] = int(fig.layout.height or 460) + 10
    path = out / REPORT_FILE
    atomic_write_json(path, report)
    atomic_write_text(out / SUMMARY_FILE, format_terminal(report, full=True) + "\n")
    atomic_write_text(out / INDEX_FILE, index_html(report))
    if stream is not None:
        print(format_terminal(report, full=full_table), file=stream)
        print(f"wrote {path}, {out / INDEX_FILE} and {out / SUMMARY_FILE} (the full table)", file=stream)
    return path


def read_report(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The report.json of a report directory, with every file it names checked to exist."""
    from workbench.core.errors import ArtifactError

    out = Path(out_dir)
    report = read_json(out / REPORT_FILE)
    for s in report.get("sections", []):
        for rel in [s["files"]["result"], *s["files"]["figures"].values()]:
            if not (out / rel).is_file():
                raise ArtifactError(f"report.json names {rel} but {out / rel} is missing. Rerun the report.")
    return report
