"""A section over seeds: aggregate rows exact against a naive reference (means, sample sds over
seeds, clears in every seed, rows missing in a seed), and the aggregate as a Result (save/load,
figures of the first seed, the report's rows)."""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from workbench.core.errors import ArtifactError, ConfigError
from workbench.report import write_report
from workbench.results.base import Result, ResultBase
from workbench.results.rows import SummaryRow
from workbench.results.seed_rows import SEEDS_KIND, SeedsResult, combine_rows


def _row(where: str, value: Any, **kw: Any) -> dict[str, Any]:
    return {"where": where, "group": "g", "measure": "AUROC", "value": value, **kw}


def test_values_and_controls_are_the_mean_and_sample_sd_over_seeds():
    seeds = [[_row("a", 0.61, control="shuffled", control_value=0.50, sd=0.9, ci=[0.0, 1.0]), _row("b", 0.2)],
             [_row("a", 0.72, control="shuffled", control_value=0.48), _row("b", 0.3)],
             [_row("a", 0.90, control="shuffled", control_value=0.55), _row("b", 0.7)]]
    a, b = combine_rows(seeds)
    assert a["value"] == pytest.approx(statistics.mean([0.61, 0.72, 0.90]), abs=1e-12)
    assert a["sd"] == pytest.approx(statistics.stdev([0.61, 0.72, 0.90]), abs=1e-12)  # over seeds, not the seed's own
    assert a["control_value"] == pytest.approx(statistics.mean([0.50, 0.48, 0.55]), abs=1e-12)
    assert a["control"] == "shuffled" and "ci" not in a  # a seed's own interval is not the spread over seeds
    assert (a["n_seeds"], a["seed_values"]) == (3, [0.61, 0.72, 0.90])
    assert b["sd"] == pytest.approx(statistics.stdev([0.2, 0.3, 0.7]), abs=1e-12)
    assert "control" not in b and "control_value" not in b and "clears" not in b  # no control: no verdict
    assert list(a)[:4] == ["where", "group", "measure", "value"] and list(a)[-2:] == ["n_seeds", "seed_values"]


def test_clears_only_when_every_seed_that_has_the_row_clears():
    def seeds_with(*verdicts: Any) -> list[list[dict[str, Any]]]:
        return [[_row("a", 0.7, control_value=0.5, clears=v)] for v in verdicts]

    assert combine_rows(seeds_with(True, True, True))[0]["clears"] is True
    assert combine_rows(seeds_with(True, False, True))[0]["clears"] is False
    undefined_control = [[_row("a", 0.7, control_value=0.5)], [_row("a", 0.7, control_value=None)]]
    assert combine_rows(undefined_control)[0]["clears"] is False  # a seed without a verdict has not cleared
    # a seed without its own rule is judged by the report's: value - 2 sd (or its interval) above the control
    by_rule = [[_row("a", 0.9, control_value=0.5, sd=0.1)], [_row("a", 0.6, control_value=0.5, sd=0.1)]]
    assert combine_rows(by_rule)[0]["clears"] is False
    by_ci = [[_row("a", 0.9, control_value=0.5, ci=[0.6, 1.0])], [_row("a", 0.7, control_value=0.5, ci=[0.55, 0.8])]]
    assert combine_rows(by_ci)[0]["clears"] is True


def test_point_value_clears_in_every_seed_star_only_when_the_t_interval_over_seeds_clears():
    # each seed clears on its point value alone (no interval of its own): the seeds must agree firmly
    def three(*pairs: tuple[float, float]) -> dict[str, Any]:
        return combine_rows([[_row("a", v, control_value=c)] for v, c in pairs])[0]

    scattered = three((0.9, 0.1), (0.15, 0.1), (0.6, 0.1))  # margins 0.8, 0.05, 0.5: clears in every seed
    diffs = [0.8, 0.05, 0.5]
    half = 4.302652729749464 * statistics.stdev(diffs) / 3 ** 0.5  # t(0.975, df 2), the naive reference
    assert scattered["margin_ci"] == pytest.approx([statistics.mean(diffs) - half, statistics.mean(diffs) + half])
    assert scattered["margin_ci"][0] < 0 and scattered["clears"] is False
    steady = three((0.62, 0.1), (0.58, 0.1), (0.6, 0.12))
    assert steady["margin_ci"][0] > 0 and steady["clears"] is True
    # seeds that each clear with an interval of their own need no t interval (e.g. two seeds far apart)
    firm = combine_rows([[_row("a", 0.9, control_value=0.5, sd=0.1)], [_row("a", 0.6, control_value=0.5, sd=0.01)]])[0]
    assert firm["margin_ci"][0] < 0 and firm["clears"] is True
    one_fails = three((0.62, 0.1), (0.58, 0.6), (0.6, 0.12))
    assert one_fails["clears"] is False


def test_rows_missing_in_a_seed_are_aggregated_over_the_seeds_that_have_them():
    seeds = [[_row("a", 0.6, control_value=0.5, clears=True), _row("b", 0.1)],
             None,  # this seed has no result for the section
             [_row("b", 0.3)],
             [_row("a", 0.61, control_value=0.5, clears=True), _row("b", None)]]  # undefined in this seed
    a, b = combine_rows(seeds)
    assert (a["n_seeds"], a["seed_values"]) == (2, [0.6, None, None, 0.61])
    assert a["value"] == pytest.approx(0.605) and a["sd"] == pytest.approx(statistics.stdev([0.6, 0.61]))
    assert a["control_value"] == pytest.approx(0.5) and a["clears"] is True
    assert (b["n_seeds"], b["seed_values"]) == (2, [0.1, None, 0.3, None])
    assert b["value"] == pytest.approx(0.2)
    only_one = combine_rows([[_row("c", 0.9, control_value=0.5, clears=True)], []])[0]
    assert (only_one["n_seeds"], only_one["sd"], only_one["clears"]) == (1, None, True)  # the seed's own verdict
    undefined = combine_rows([[_row("d", None, control_value=None)], [_row("d", None, control_value=None)]])[0]
    assert (undefined["value"], undefined["sd"], undefined["control_value"], undefined["n_seeds"]) == (None, None, None, 0)


def test_repeated_keys_match_by_order_and_details_combine():
    seeds = [[_row("a", 0.1, n=200, model="student", top=["x"]), _row("a", 0.5, n=200)],
             [_row("a", 0.3, n=100, model="student", top=["y"]), _row("a", 0.7, n=200)]]
    first, second = combine_rows(seeds)
    assert first["value"] == pytest.approx(0.2) and second["value"] == pytest.approx(0.6)
    assert first["n"] == pytest.approx(150.0) and second["n"] == 200  # numbers averaged, equal ones kept as they are
    assert first["model"] == "student" and first["top"] == [["x"], ["y"]]  # others listed per seed


@dataclass
class Tiny(ResultBase):
    kind: ClassVar[str] = "tiny"
    title: ClassVar[str] = "A tiny section"
    rows: list[dict[str, Any]] = field(default_factory=list)
    command: str = "tiny()"

    def figures(self) -> dict[str, Any]:
        import plotly.graph_objects as go

        return {"bars": go.Figure(go.Bar(x=[r["where"] for r in self.rows], y=[r["value"] for r in self.rows]),
                                  layout={"title": {"text": "Tiny bars"}})}

    def summary_rows(self) -> list[SummaryRow]:
        return [SummaryRow.from_dict(r) for r in self.rows]


def test_the_aggregate_keeps_the_result_contract_and_finds_its_seeds_results(tmp_path, monkeypatch):
    # the aggregate reloads only workbench result classes (never a module a file names): Tiny poses as one
    module = types.ModuleType("workbench._tiny_result")
    module.__dict__.update({k: v for k, v in globals().items() if not k.startswith("__")})  # Tiny's type hints
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(Tiny, "__module__", module.__name__)
    results = [Tiny([_row("a", 0.6, control_value=0.5, clears=True)]),
               Tiny([_row("a", 0.61, control_value=0.5, clears=True)])]
    dirs = []
    for seed, result in zip((0, 1), results):
        dirs.append(tmp_path / "seeds" / f"seed{seed}" / "sections" / "tiny")
        result.save(dirs[-1])
    combined = SeedsResult.combine(results, [0, 1], dirs, command="job")
    assert isinstance(combined, Result) and (combined.kind, combined.title) == ("tiny", "A tiny section")
    out = tmp_path / "report"
    write_report([combined], out, stream=None)
    report = json.loads((out / "report.json").read_text())
    section = report["sections"][0]
    assert section["files"]["result"] == f"sections/tiny/{SEEDS_KIND}.json"
    (row,) = section["summary_rows"]
    assert (row["n_seeds"], row["seed_values"], row["clears"]) == (2, [0.6, 0.61], True)
    assert row["value"] == pytest.approx(0.605)
    # loaded back (e.g. in a notebook): the rows, and the figures from seed 0's saved result, titled so
    loaded = SeedsResult.load(out / "sections" / "tiny")
    assert loaded.rows == json.loads(json.dumps(combined.rows)) and loaded.seeds == [0, 1]
    fig = loaded.figures()["bars"]
    assert list(fig.data[0].y) == [0.6] and fig.layout.title.text.startswith("Tiny bars<br><sub>seed 0 of seeds 0 1")
    assert fig.layout.margin.t >= 40 + 22 * 2  # room for both title lines above the plot
    foreign = json.loads((out / "sections" / "tiny" / f"{SEEDS_KIND}.json").read_text())
    foreign["data"]["result_class"] = "os:system"
    (out / "sections" / "tiny" / f"{SEEDS_KIND}.json").write_text(json.dumps(foreign))
    with pytest.raises(ArtifactError, match="not a workbench result class"):
        SeedsResult.load(out / "sections" / "tiny").figures()
    with pytest.raises(ConfigError, match="kinds"):
        SeedsResult.combine([results[0], dataclasses.replace(combined, kind="other")], [0, 1], dirs)
