"""The localisation report: `report.json`, one HTML file per figure, `index.html`, a terminal summary.

`write_report` walks the results it is given through the `Result` contract only (kind, title,
command, save, figures, summary_rows), so a new analysis adds a section without touching the
others. Each section's result files go to `<out>/sections/<id>/`, its figures to `<out>/*.html`
(offline: one `plotly.min.js` beside them), and `report.json` records every section's summary
rows, where its files are and the command that regenerates it.

Summary rows are flat dicts. The report reads these keys when present (others are kept and
shown as they are): `where` (hook, layer or component), `measure` (what the value is), `value`,
`sd`, `control` (name of the baseline), `control_value` and `group` (a sub-analysis of the
section, e.g. a probe task). The terminal summary shows, per `where`, section and group, the
row whose value is furthest above its control.
"""

from __future__ import annotations

import html
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from workbench.errors import ConfigError
from workbench.io import atomic_write_json, atomic_write_text, read_json
from workbench.provenance import SCHEMA_VERSION, package_versions
from workbench.results import Result, write_figures

REPORT_FILE = "report.json"
INDEX_FILE = "index.html"


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


def _margin(row: dict[str, Any]) -> float:
    """How far a row's value sits above its control (its value when it has no numeric control)."""
    value, control = row.get("value"), row.get("control_value")
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        return -math.inf
    if isinstance(control, (int, float)) and math.isfinite(control):
        return float(value) - float(control)
    return float(value)


def _where(row: dict[str, Any]) -> str:
    return str(row.get("where", row.get("hook", row.get("layer", "(overall)"))))


def _measure(row: dict[str, Any], section: str) -> str:
    """The row's `measure`, else its first numeric fields as `name=value` (rows of other conventions)."""
    if "measure" in row:
        return str(row["measure"])
    numeric = [(k, v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in ("where", "hook", "layer")]
    return f"{section}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in numeric[:3]) if numeric else section


def strongest_rows(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (where, section, group): the summary row furthest above its control, in first-seen order."""
    best: dict[tuple[str, str, str], dict[str, Any]] = {}
    for section in sections:
        for row in section["summary_rows"]:
            key = (_where(row), section["id"], str(row.get("group", "")))
            if key not in best or _margin(row) > _margin(best[key]):
                best[key] = {**row, "section": section["id"]}
    order = list(dict.fromkeys(k[0] for k in best))
    return sorted(best.values(), key=lambda r: order.index(_where(r)))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_summary(sections: list[dict[str, Any]], width: int = 76) -> str:
    """Terminal table: per layer/component the strongest evidence beside its control."""
    rows = strongest_rows(sections)
    if not rows:
        return "(no summary rows)"
    where_w = max(12, *(len(_where(r)) for r in rows))
    lines = [f"{'where':<{where_w}}  {'evidence':<{width}}  {'value':>7}  {'control':>7}  control is"]
    for r in rows:
        measure = _measure(r, r["section"])
        measure = measure if len(measure) <= width else measure[: width - 1] + "~"
        lines.append(f"{_where(r):<{where_w}}  {measure:<{width}}  {_fmt(r.get('value')):>7}  "
                     f"{_fmt(r.get('control_value')):>7}  {r.get('control', '-')}")
    return "\n".join(lines)


def _table_html(rows: list[dict[str, Any]], limit: int = 200) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows[:limit])
    more = f"<p>({len(rows) - limit} more rows in report.json)</p>" if len(rows) > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}code{background:#f3f3f3;padding:2px 4px}h2{margin-top:1.6em}"""


def _index_html(report: dict[str, Any]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report['title'])}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(report['title'])}</h1>"]
    if report.get("command"):
        parts.append(f"<p>Regenerate everything: <code>{html.escape(report['command'])}</code></p>")
    parts.append("<h2>Strongest evidence per layer/component, beside its control</h2>")
    parts.append(_table_html(report["strongest"]))
    for s in report["sections"]:
        parts.append(f"<h2 id='{html.escape(s['id'])}'>{html.escape(s['title'])}</h2>")
        parts.append(f"<p>Regenerate: <code>{html.escape(s['command'] or '(not recorded)')}</code>; "
                     f"result files: <a href='{html.escape(s['files']['result'])}'>{html.escape(s['files']['result'])}</a></p>")
        if s["files"]["figures"]:
            links = "".join(f"<li><a href='{html.escape(p)}'>{html.escape(n)}</a></li>" for n, p in s["files"]["figures"].items())
            parts.append(f"<ul>{links}</ul>")
        parts.append(_table_html(s["summary_rows"]))
    parts.append("</body></html>")
    return "".join(parts)


def write_report(
    results: Sequence[Result],
    out_dir: str | os.PathLike,
    *,
    command: str = "",
    title: str = "workbench: where does the hidden signal live?",
    meta: dict[str, Any] | None = None,
    stream: TextIO | None = sys.stdout,
) -> Path:
    """Write every result's files, figures, `report.json` and `index.html`; print the summary.

    Returns the path of `report.json`. `stream=None` prints nothing.
    """
    if not results:
        raise ConfigError("No results to report; run at least one analysis.")
    for r in results:
        if not isinstance(r, Result):
            raise ConfigError(f"{type(r).__name__} does not follow the Result contract (workbench/results.py).")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    used_names: set[str] = set()
    for sid, result in zip(_section_ids(results), results):
        result_path = result.save(out / "sections" / sid)
        figures = result.figures()
        named = {}
        for name, fig in figures.items():
            file_stem = name if name not in used_names else f"{sid}_{name}"
            used_names.add(file_stem)
            named[file_stem] = (name, fig)
        paths = write_figures({stem: fig for stem, (_, fig) in named.items()}, out)
        sections.append({
            "id": sid, "kind": result.kind, "title": result.title, "command": result.command,
            "files": {"result": result_path.relative_to(out).as_posix(),
                      "figures": {named[stem][0]: p.relative_to(out).as_posix() for stem, p in paths.items()}},
            "summary_rows": _clean(result.summary_rows()),
        })
    report = {"schema_version": SCHEMA_VERSION, "title": title, "command": command, "versions": package_versions(),
              "meta": _clean(meta or {}), "sections": sections, "strongest": strongest_rows(sections)}
    path = out / REPORT_FILE
    atomic_write_json(path, report)
    atomic_write_text(out / INDEX_FILE, _index_html(report))
    if stream is not None:
        print(format_summary(sections), file=stream)
        print(f"wrote {path} and {out / INDEX_FILE}", file=stream)
    return path


def read_report(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The report.json of a report directory, with every file it names checked to exist."""
    from workbench.errors import ArtifactError

    out = Path(out_dir)
    report = read_json(out / REPORT_FILE)
    for s in report.get("sections", []):
        for rel in [s["files"]["result"], *s["files"]["figures"].values()]:
            if not (out / rel).is_file():
                raise ArtifactError(f"report.json names {rel} but {out / rel} is missing. Rerun the report.")
    return report
