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
The terminal summary and index.html show, per `where`, section and group, the row whose value is
furthest above its control, in forward order (embeddings, blocks, final, whole model).
"""

from __future__ import annotations

import html
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
from workbench.results.rows import SCHEMA, row_dict
from workbench.results.stars import LEGEND, MARK, Star, clears, star, uncertainty  # noqa: F401 (clears: public here)
from workbench.results.stars import margin as _margin
from workbench.results.stars import number as _number
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


def _section_ids(results: Sequence[Result]) -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for r in results:
        seen[r.kind] = seen.get(r.kind, 0) + 1
        ids.append(r.kind if seen[r.kind] == 1 else f"{r.kind}-{seen[r.kind]}")
    return ids


def _where(row: dict[str, Any]) -> str:
    return str(row.get("where", row.get("hook", row.get("layer", "(overall)"))))


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


def _fmt(v: Any) -> str:
    """A value as printed; `n/a` where it is undefined (None or NaN: see `LEGEND`)."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else "n/a"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _measure(row: dict[str, Any], section: str) -> str:
    """The row's `measure`, else its first numeric fields as `name=value` (rows of other conventions)."""
    if "measure" in row:
        return str(row["measure"])
    numeric = [(k, v) for k, v in row.items() if _number(v) is not None and k not in ("where", "hook", "layer")]
    return f"{section}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in numeric[:3]) if numeric else section


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


# --------------------------------------------------------------------------- index.html

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1280px;padding:0 24px;color:#222}
h1{font-size:24px;margin:0 0 8px}h2{font-size:19px;margin:36px 0 6px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:14px;margin:8px 0 16px}
dl.meta dt{color:#666}dl.meta dd{margin:0}
code{background:#f3f3f3;padding:1px 4px;border-radius:3px;font-size:12.5px;word-break:break-all}
table{border-collapse:collapse;font-size:13px;width:100%}
th{background:#f3f3f3;text-align:left;font-weight:600;position:sticky;top:0}
td,th{border-bottom:1px solid #e4e4e4;padding:3px 8px;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.where{font-family:ui-monospace,monospace;font-size:12px;white-space:nowrap;background:#fafafa;font-weight:600}
td.rep{color:#aaa;font-weight:400;background:#fff}
tr.first td{border-top:2px solid #bbb}
td.sec{white-space:nowrap;color:#444}td.sec a{color:#1a5fb4;text-decoration:none}
td.ctrl{color:#555;white-space:nowrap}td.ev{white-space:nowrap}th{white-space:nowrap}td.unc{color:#888;padding-left:0}td.details{color:#666;font-size:12px}
td.clear{background:#e3f4e1;font-weight:600}td.mark{color:#2e7d32;font-weight:700;text-align:center;width:1em}
.legend{font-size:12.5px;color:#555;margin:6px 0}
.figs{display:grid;grid-template-columns:1fr;gap:12px}
.fig{border:1px solid #e4e4e4;border-radius:4px;padding:4px}.fig iframe{width:100%;height:520px;border:0}
.fig a{font-size:12.5px}details{margin:8px 0}summary{cursor:pointer;color:#1a5fb4;font-size:13.5px}
.verdict{border:1px solid #9ccc9a;background:#f4fbf3;border-radius:6px;padding:4px 16px 8px;margin:8px 0 12px}
.verdict h2{border:0;margin:8px 0 4px;font-size:18px}.verdict ul{margin:4px 0;padding-left:20px;font-size:14.5px}
.verdict li{margin:3px 0}p.caption{font-size:14px;margin:4px 2px 6px;font-weight:500}
input[type=search]{font-size:13px;padding:2px 6px;width:260px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _details(row: dict[str, Any], limit: int = 6) -> str:
    """A row's extra (non-schema) keys as `name value` pairs, at most `limit`, lists shortened."""
    extras = [(k, v) for k, v in row.items() if k not in SCHEMA and k != "section" and v is not None]
    out = []
    for k, v in extras[:limit]:
        if isinstance(v, (list, tuple)):
            v = list(v)[:5]
        out.append(f"{k} {_fmt(v)}")
    more = f"; +{len(extras) - limit} more in report.json" if len(extras) > limit else ""
    return "; ".join(out) + more


def _cells(row: dict[str, Any], section: str) -> dict[str, tuple[str, str]]:
    """Column -> (css class, escaped html) for one summary row."""
    u = uncertainty(row)
    st = star(row)
    ok = st is Star.CLEARS
    return {
        "group": ("sec", _e(row.get("group", ""))),
        "evidence": ("ev" if len(_measure(row, section)) <= 70 else "", _e(_measure(row, section))),
        "value": ("num clear" if ok else "num", _e(_fmt(row.get("value")))),
        "±": ("num unc", f"±{u:.3f}" if u is not None else ""),
        "": ("mark", "✓" if ok else "°" if st is Star.SINGLE else ""),
        "control": ("num", _e(_fmt(row.get("control_value"))) if "control_value" in row else ""),
        "control is": ("ctrl", _e(row.get("control", ""))),
        "details": ("details", _e(_details(row))),
    }


def _used(columns: list[str], cells: list[dict[str, tuple[str, str]]]) -> list[str]:
    """The columns some row fills (no empty columns); the mark column travels with the value."""
    used = [c for c in columns if c == "" or any(cell[c][1] not in ("", "-", "n/a") for cell in cells)]
    return used if any(cell[""][1] for cell in cells) else [c for c in used if c != ""]


def _head(columns: list[str]) -> str:
    nums = {"value", "±", "control"}
    return "".join(f"<th class='num'>{_e(c)}</th>" if c in nums else f"<th>{_e(c)}</th>" for c in columns)


def _evidence_html(rows: list[dict[str, Any]], titles: dict[str, str]) -> str:
    """The strongest rows, one block per `where` (its name spanning the block's rows)."""
    if not rows:
        return "<p>(no summary rows)</p>"
    cells = [_cells(r, r["section"]) for r in rows]
    for r, c in zip(rows, cells):
        sec = f"<a href='#{_e(r['section'])}' title='{_e(titles.get(r['section'], ''))}'>{_e(r['section'])}</a>"
        c["section"] = ("sec", sec)
    columns = _used(["section", "group", "evidence", "value", "±", "", "control", "control is"], cells)
    body = []
    seen: set[str] = set()
    for r, c in zip(rows, cells):
        w = _where(r)  # every row names its place (the filter hides rows), the first of a block in bold
        first = w not in seen
        seen.add(w)
        lead = f"<td class='{'where' if first else 'where rep'}'>{_e(w)}</td>"
        tr = "<tr class='first'>" if first else "<tr>"
        body.append(f"{tr}{lead}"
                    + "".join(f"<td class='{c[k][0]}'>{c[k][1]}</td>" for k in columns) + "</tr>")
    return (f"<table id='evidence-table'><thead><tr><th>where</th>{_head(columns)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _rows_html(rows: list[dict[str, Any]], section: str, limit: int = 300) -> str:
    """A section's summary rows: schema columns that some row fills, then the extras as details."""
    cells = [_cells(r, section) for r in rows[:limit]]
    for r, c in zip(rows, cells):
        c["where"] = ("where-plain", _e(_where(r)))
    columns = _used(["where", "group", "evidence", "value", "±", "", "control", "control is", "details"], cells)
    body = "".join("<tr>" + "".join(f"<td class='{c[k][0]}'>{c[k][1]}</td>" for k in columns) + "</tr>" for c in cells)
    more = f"<p class='legend'>({len(rows) - limit} more rows in report.json)</p>" if len(rows) > limit else ""
    return f"<table><thead><tr>{_head(columns)}</tr></thead><tbody>{body}</tbody></table>{more}"


def _meta_html(report: dict[str, Any]) -> str:
    meta = dict(report.get("meta") or {})
    items = []
    labels = (("models", "models"), ("organism", "organism"), ("target", "trait"), ("distillation loss", "distillation loss"),
              ("data", "data"),
              ("n_rows", "rows"), ("positions", "positions"), ("hooks", "hooks"), ("device", "device"))
    for key, label in labels:
        if key in meta:
            v = meta.pop(key)
            text = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else _fmt(v)
            if key == "hooks" and isinstance(v, (list, tuple)):
                text = f"{len(v)}: {text}"
            items.append((label, _e(text)))
    items += [(k, _e(_fmt(v))) for k, v in meta.items()]
    if report.get("command"):
        items.append(("regenerate", f"<code>{_e(report['command'])}</code>"))
    versions = report.get("versions") or {}
    if versions:
        items.append(("versions", _e(", ".join(f"{k} {v}" for k, v in versions.items()))))
    return "<dl class='meta'>" + "".join(f"<dt>{label}</dt><dd>{v}</dd>" for label, v in items) + "</dl>"


_FILTER_JS = """
function wbFilter(input){var q=input.value.toLowerCase();var t=document.getElementById(input.dataset.table);
var rows=t.tBodies[0].rows;for(var i=0;i<rows.length;i++){var r=rows[i];
r.style.display=(!q||r.textContent.toLowerCase().indexOf(q)>=0)?'':'none';}}
"""


def _figure_html(name: str, path: str, caption: str = "", height: int = 520) -> str:
    cap = f"<p class='caption'>{_e(caption)}</p>" if caption else ""
    return (f"<div class='fig'>{cap}<iframe loading='lazy' src='{_e(path)}' title='{_e(name)}' style='height:{height}px'>"
            f"</iframe><a href='{_e(path)}'>{_e(name)} (open)</a></div>")


def _verdict_html(report: dict[str, Any]) -> str:
    verdict = report.get("verdict") or []
    if not verdict:
        return ""
    head, *body = verdict
    items = "".join(f"<li>{_e(line)}</li>" for line in body)
    return f"<div class='verdict'><h2 id='verdict'>{_e(head)}</h2><ul>{items}</ul></div>"


def _index_html(report: dict[str, Any]) -> str:
    """Verdict and map first, then per section its key figure with a one-line finding, then the
    full evidence (collapsible, filterable) and the run's metadata."""
    titles = {s["id"]: s["title"] for s in report["sections"]}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(report['title'])}</title>"
             f"<style>{_STYLE}</style><script>{_FILTER_JS}</script></head><body><h1>{_e(report['title'])}</h1>",
             _verdict_html(report)]
    if report.get("map"):
        parts.append(_figure_html("map", report["map"], height=report.get("map_height", 460)))
    parts.append(f"<p class='legend'>{_e(LEGEND)}.</p>")
    nav = " · ".join(f"<a href='#{_e(s['id'])}'>{_e(s['id'])}</a>" for s in report["sections"])
    parts.append(f"<p class='legend'>Sections: {nav} · <a href='#evidence'>all evidence</a> · <a href='#run'>run</a></p>")
    if report.get("missing"):
        items = "".join(f"<li><b>{_e(m['section'])}</b>: {_e(m['reason'])}</li>" for m in report["missing"])
        parts.append(f"<h2 id='missing'>Missing sections</h2><ul class='missing'>{items}</ul>")
    for s in report["sections"]:
        parts.append(f"<h2 id='{_e(s['id'])}'>{_e(s['title'])}</h2>")
        cmd = s.get("command") or ""
        if cmd and cmd == report.get("command"):
            regen = (f"regenerated by the command at the end (this section alone: add <code>--sections {_e(s['kind'])}"
                     "</code> and another <code>--out</code>)")
        else:
            regen = f"regenerate: <code>{_e(cmd or '(not recorded)')}</code>"
        figures = list(s["files"]["figures"].items())
        if figures:
            parts.append(_figure_html(*figures[0], caption=s.get("finding", "")))
            if len(figures) > 1:
                more = "".join(_figure_html(n, p) for n, p in figures[1:])
                parts.append(f"<details><summary>{len(figures) - 1} more figure(s)</summary><div class='figs'>{more}</div>"
                             "</details>")
        elif s.get("finding"):
            parts.append(f"<p class='caption'>{_e(s['finding'])}</p>")
        parts.append(f"<p class='legend'>{regen}; result files: <a href='{_e(s['files']['result'])}'>"
                     f"{_e(s['files']['result'])}</a></p>")
        rows = s["summary_rows"]
        if rows:
            parts.append(f"<details><summary>all {len(rows)} summary rows</summary>{_rows_html(rows, s['id'])}</details>")
    parts.append("<h2 id='evidence'>All evidence: the strongest row per place, section and group, beside its control</h2>")
    parts.append("<details open><summary>show / hide the table</summary>"
                 "<p class='legend'>Filter: <input type='search' data-table='evidence-table' oninput='wbFilter(this)' "
                 "placeholder='e.g. mlp, probes, blocks.1'> ± is the row's sd (or half its interval).</p>"
                 + _evidence_html(report["strongest"], titles) + "</details>")
    parts.append("<h2 id='run'>The run</h2>" + _meta_html(report))
    parts.append("</body></html>")
    return "".join(parts)


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
    for sid, result in zip(_section_ids(results), results):
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
    atomic_write_text(out / INDEX_FILE, _index_html(report))
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
