import io
import json
import re
from dataclasses import dataclass
from typing import ClassVar

import plotly.graph_objects as go
import pytest
import torch

from workbench.core.errors import ConfigError
from workbench.analyses.probes import ProbeConfig, cross_validate, score_auroc, transfer_probe
from workbench.analyses.probe_result import ProbeResult, control_row, cv_rows, transfer_rows
from workbench.report import clears, format_summary, read_report, strongest_rows, uncertainty, write_report
from workbench.results.base import read_result_files, write_result_files
from workbench.analyses.directions import DirectionResult, mean_difference, random_direction_aurocs, shift_along


def probe_result():
    g = torch.Generator().manual_seed(0)
    n, d = 200, 6
    y = torch.arange(n) % 2 == 0
    feats = {f"blocks.{i}.hook_resid_post": torch.randn(n, d, generator=g) + (i == 1) * 2.0 * y[:, None].float()
             for i in range(2)}
    cv = cross_validate(feats, y, torch.arange(n) // 2, ProbeConfig(shuffle_repeats=2))
    rows = cv_rows(cv, "data_source", "base", seed=0)
    rows.append(control_row("data_source", "oracle", score_auroc(y.float() + torch.randn(n, generator=g), y, cv.folds), n))
    moved = {h: x + 0.5 for h, x in feats.items()}
    tr = transfer_probe(moved, feats, torch.arange(n), {"student": moved, "control": feats})
    rows += transfer_rows(tr, "cross_model", seed=0)
    return ProbeResult(rows=rows, command="python -m workbench.probe --test", config={"a": 1})


def direction_result():
    g = torch.Generator().manual_seed(1)
    a = {"blocks.0.hook_resid_post": torch.randn(50, 4, generator=g) + 1}
    b = {"blocks.0.hook_resid_post": torch.randn(50, 4, generator=g)}
    dirs = mean_difference(a, b)
    labels = torch.arange(100) < 50
    both = {h: torch.cat([a[h], b[h]]) for h in a}
    rand = random_direction_aurocs(both, labels, k=8)
    detection = [dict(direction="teacher_minus_base", hook=h, reader="base", auroc=0.7, random_mean=float(rand[h].mean()),
                      random_p95=0.55, n=100) for h in dirs]
    shifts = [dict(direction="teacher_minus_base", hook=h, model=m, **v)
              for m, feats in {"student": a, "control": b}.items() for h, v in shift_along(feats, b, a).items()]
    return DirectionResult(directions={"teacher_minus_base": dirs}, detection=detection, shifts=shifts, command="f()")


@dataclass
class OtherResult:
    """A stand-in for another helper's analysis: only the Result contract."""

    kind: ClassVar[str] = "compare"
    title: ClassVar[str] = "Activation comparison"
    value: float
    command: str = "python -m workbench.compare"

    def save(self, directory):
        return write_result_files(directory, self.kind, {"value": self.value})

    @classmethod
    def load(cls, directory):
        return cls(read_result_files(directory, cls.kind)[0]["value"])

    def figures(self):
        return {"bar": go.Figure(go.Bar(x=["a"], y=[self.value]))}

    def summary_rows(self):
        return [{"where": "blocks.1.hook_resid_post", "measure": "shift", "value": self.value, "control": "ctrl",
                 "control_value": float("nan")}]


def test_report_writes_every_section_and_walks_only_the_contract(tmp_path):
    results = [probe_result(), direction_result(), OtherResult(0.3)]
    stream = io.StringIO()
    path = write_report(results, tmp_path, command="python -m workbench.probe", stream=stream)
    report = json.loads(path.read_text())  # strict JSON (NaN became null)
    assert [s["id"] for s in report["sections"]] == ["probes", "directions", "compare"]
    for s in report["sections"]:
        assert s["command"] and s["summary_rows"]
        assert (tmp_path / s["files"]["result"]).is_file()
        for rel in s["files"]["figures"].values():
            html = (tmp_path / rel).read_text()
            assert 'src="plotly.min.js"' in html and "cdn.plot.ly" not in html
    assert len(list(tmp_path.rglob("plotly.min.js"))) == 1
    index = (tmp_path / "index.html").read_text()
    for s in report["sections"]:
        for rel in s["files"]["figures"].values():
            assert f"href='{rel}'" in index
    assert report["sections"][2]["summary_rows"][0]["control_value"] is None
    read_report(tmp_path)
    out = stream.getvalue()
    assert out.startswith("VERDICT") and "report.json" in out
    full = (tmp_path / "summary.txt").read_text()  # the full table: summary.txt (and index.html)
    assert "blocks.1.hook_resid_post" in full and "shuffled labels" in full
    # the strongest row at the planted layer is the probe, far above its shuffled control
    best = [r for r in report["strongest"] if r["where"] == "blocks.1.hook_resid_post" and r["section"] == "probes"][0]
    assert best["value"] > 0.9 and best["control_value"] < 0.65
    # results load back from their section directories
    loaded = ProbeResult.load(tmp_path / "sections" / "probes")
    assert loaded.rows == json.loads(json.dumps(results[0].rows))
    dirs = DirectionResult.load(tmp_path / "sections" / "directions")
    assert torch.equal(dirs.directions["teacher_minus_base"]["blocks.0.hook_resid_post"],
                       results[1].directions["teacher_minus_base"]["blocks.0.hook_resid_post"])


def test_report_rejects_non_results_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="contract"):
        write_report([object()], tmp_path, stream=None)
    with pytest.raises(ConfigError, match="No results"):
        write_report([], tmp_path, stream=None)
    write_report([OtherResult(1.0)], tmp_path, stream=None)
    (tmp_path / "compare_bar.html").unlink()
    with pytest.raises(Exception, match="missing"):
        read_report(tmp_path)


def test_strongest_row_is_furthest_above_its_control():
    sections = [{"id": "s", "summary_rows": [
        {"where": "L0", "value": 0.9, "control_value": 0.85},
        {"where": "L0", "value": 0.7, "control_value": 0.5},
        {"where": "L1", "value": 0.6},
    ]}]
    rows = strongest_rows(sections)
    assert [(r["where"], r["value"]) for r in rows] == [("L0", 0.7), ("L1", 0.6)]


def test_strongest_rows_follow_the_forward_pass():
    """Embeddings, then blocks by number (hooks before parameter groups), the head, the whole model."""
    wheres = ["whole model", "blocks.10.attn.o", "layer 1", "blocks.0.mlp.out", "ln_final + unembed",
              "blocks.1.hook_resid_post", "embed", "hook_embed", "blocks.2.hook_attn_out"]
    rows = strongest_rows([{"id": "s", "summary_rows": [{"where": w, "value": 0.5} for w in wheres]}])
    assert [r["where"] for r in rows] == ["hook_embed", "embed", "blocks.0.mlp.out", "blocks.1.hook_resid_post",
                                          "layer 1", "blocks.2.hook_attn_out", "blocks.10.attn.o",
                                          "ln_final + unembed", "whole model"]


@pytest.mark.parametrize("row, expected", [
    ({"value": 0.7, "control_value": 0.5}, True),
    ({"value": 0.4, "control_value": 0.5}, False),
    ({"value": 0.7, "control_value": 0.5, "sd": 0.2}, False),  # within 2 sd of the control
    ({"value": 0.7, "control_value": 0.5, "sd": 0.05}, True),
    ({"value": 0.7, "control_value": 0.5, "ci": [0.45, 0.9]}, False),  # the interval reaches below the control
    ({"value": 0.7, "control_value": 0.5, "ci": [0.6, 0.8]}, True),
    ({"value": 0.7, "control_value": 0.5, "clears": False}, False),  # the section's own rule wins
    ({"value": 0.7}, None),  # no control: no verdict
    ({"value": None, "control_value": 0.5}, None),
])
def test_clears_its_control(row, expected):
    assert clears(row) is expected


def test_uncertainty_is_sd_or_half_interval():
    assert uncertainty({"sd": 0.1, "ci": [0, 1]}) == 0.1
    assert uncertainty({"ci": [0.2, 0.6]}) == pytest.approx(0.2)
    assert uncertainty({"ci": [None, 0.6]}) is None and uncertainty({}) is None


def test_terminal_summary_fits_120_columns_and_wraps_long_measures():
    long = "a very long description of what this value measures, in which unit and on which models it was read"
    sections = [
        {"id": "activation_patching", "summary_rows": [
            {"where": "blocks.11.hook_resid_post", "group": "student->base", "measure": long, "value": 0.81,
             "control": "control->base with a needlessly long name", "control_value": -0.05, "sd": 0.01}]},
        {"id": "probes", "summary_rows": [
            {"where": "blocks.11.hook_resid_post", "group": g, "measure": "probe AUROC", "value": 0.6, "control": "shuffled",
             "control_value": 0.5} for g in ("data_source", "cross_model")]},
    ]
    text = format_summary(sections)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    words = " ".join(text.split())
    assert "a very long description" in words and "on which models it was read" in words  # wrapped, never cut
    row = next(line for line in lines if "activation_patching" in line)  # one group: the section alone
    assert "0.810±0.010 *" in row and "-0.050" in row
    assert any(line.startswith("  probes/data_source ") for line in lines)


def test_index_has_no_empty_columns_and_marks_values_that_clear(tmp_path):
    write_report([OtherResult(0.3)], tmp_path, stream=None)
    index = (tmp_path / "index.html").read_text()
    evidence = index[index.index("id='evidence-table'"):]
    evidence = evidence[:evidence.index("</table>")]
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", evidence)
    # no group, no sd, no finite control value, nothing clears: those columns are left out
    assert heads == ["where", "section", "evidence", "value", "control is"]
    write_report([probe_result()], tmp_path / "p", command="python -m workbench.probe", stream=None)
    index = (tmp_path / "p" / "index.html").read_text()
    assert "<th class='num'>±</th>" in index and "class='num clear'" in index and "✓" in index
    assert "python -m workbench.probe" in index.split("<h2 id='run'>")[1]  # the run's section says how to regenerate
