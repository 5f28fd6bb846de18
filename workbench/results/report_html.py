"""index.html of a report: the verdict and the map first, each section's key figure with its
finding, then the full evidence table (collapsible, filterable; offline, no CDN) and the run.

`index_html(report)` renders the dict `workbench.report.write_report` stores as report.json.
"""

from __future__ import annotations

import html
from typing import Any

from workbench.results.row_text import fmt as _fmt
from workbench.results.row_text import measure_of as _measure
from workbench.results.row_text import where_of as _where
from workbench.results.rows import SCHEMA
from workbench.results.stars import LEGEND, Star, star, uncertainty

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


def index_html(report: dict[str, Any]) -> str:
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
