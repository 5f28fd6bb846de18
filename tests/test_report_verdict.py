"""The verdict, the map and the stricter stars, from synthetic summary rows with planted places."""

import io
import json
from dataclasses import dataclass, field
from typing import ClassVar

import plotly.graph_objects as go
import torch

from workbench.analyses.probe_result import ProbeResult, control_row, cv_rows
from workbench.analyses.probes import ProbeConfig, cross_validate, score_auroc
from workbench.report import write_report
from workbench.results.base import read_result_files, write_result_files
from workbench.results.map_figure import map_cells, map_figure
from workbench.results.places import Place
from workbench.results.stars import Star, star
from workbench.results.verdict import make_verdict, section_line


def row(where, value, control_value, **kw):
    return {"where": where, "group": "g", "measure": "m", "value": value, "control": "ctrl",
            "control_value": control_value, **kw}


def planted_sections(seeds: int | None = None):
    """One causal row clears (blocks.1.hook_mlp_out, with an interval); the other causal rows do not;
    a correlational view clears at the same place and at another one."""
    extra = {"n_seeds": seeds, "seed_values": [0.8] * seeds} if seeds else {}
    return [
        {"id": "activation_patching", "kind": "activation_patching", "summary_rows": [
            row("blocks.1.hook_mlp_out", 0.8, 0.05, sd=0.05, **extra),
            row("blocks.0.hook_mlp_out", 0.12, 0.10, sd=0.05, **extra),
            row("blocks.1.hook_attn_out", 0.3, 0.25, sd=0.1, **extra),
        ]},
        {"id": "delta_patching", "kind": "delta_patching", "summary_rows": [
            row("blocks.0.attn.q", 0.2, 0.1, clears=False, **extra),
            row("whole model", 1.0, 0.0, clears=False, **extra),
        ]},
        {"id": "weights", "kind": "weights", "summary_rows": [
            row("blocks.1.mlp.out", 0.6, 0.0, sd=0.1, **extra),
            row("blocks.0.ln1", 0.7, 0.0, sd=0.1, **extra),
        ]},
    ]


def test_verdict_names_exactly_the_planted_causal_place():
    v = make_verdict(planted_sections())
    assert list(v.causal) == [Place(1, "mlp")]
    assert not v.tentative
    text = v.text(10_000)
    assert "Causal evidence that clears its control: L1 mlp (activation_patching blocks.1.hook_mlp_out 0.800 vs 0.050" in text
    assert "L0 mlp" not in text.split("Did not clear")[0].split("Correlational")[0]
    assert "Correlational views agreeing there: L1 mlp (weights)" in text
    assert "no causal support): L0 norm (weights)" in text
    assert "Did not clear: 4 causal rows" in text
    assert v.n_rows == 7 and v.n_starred == 3 and "3 of 7 rows starred" in text
    assert "one seed: no interval over seeds" in v.lines()[0]
    assert max(len(line) for line in v.lines(100)) <= 100


def test_verdict_over_seeds_reads_n_seeds():
    v = make_verdict(planted_sections(seeds=3))
    assert v.seeds == 3 and "(over 3 seeds)" in v.lines()[0] and "3 seeds." in v.text(10_000)
    assert list(v.causal) == [Place(1, "mlp")]


def test_single_seed_point_values_are_never_starred_but_named_as_such():
    sections = [{"id": "delta_patching", "kind": "delta_patching",
                 "summary_rows": [row("blocks.2.mlp.out", 0.9, 0.1, clears=True)]}]
    v = make_verdict(sections)
    assert not v.causal and list(v.tentative) == [Place(2, "mlp")]
    text = v.text(10_000)
    assert "No causal row clears its control with an interval (one seed: no interval)." in text
    assert "Single seed, no interval (point value above its control, not a star): L2 mlp" in text
    assert "0 of 1 rows starred" in text and "1 clear on a single-seed point value only" in text
    assert "° " in section_line(sections[0]) and "0 of 1 rows clear (1 single-seed °)" in section_line(sections[0])
    # over seeds (cleared in every seed) the same row is a star
    sections[0]["summary_rows"][0].update(n_seeds=3, sd=0.05)
    assert list(make_verdict(sections).causal) == [Place(2, "mlp")]


def test_nothing_clears_says_so():
    sections = [{"id": "activation_patching", "kind": "activation_patching",
                 "summary_rows": [row("blocks.0.hook_mlp_out", 0.1, 0.2, sd=0.01)]},
                {"id": "probes", "kind": "probes", "summary_rows": [row("blocks.0.hook_resid_post", 0.5, 0.5, sd=0.01)]}]
    text = make_verdict(sections, missing=["alignment"]).text(10_000)
    assert "No causal row clears its control" in text and "No correlational row clears" in text
    assert "0 of 2 rows starred" in text and "Missing sections: alignment" in text


def test_stars_use_the_strongest_control():
    assert star(row("x", 0.62, 0.50, sd=0.01)) is Star.CLEARS
    assert star(row("x", 0.62, 0.60, sd=0.01)) is Star.FAILS  # within 2 sd of a strong control
    assert star(row("x", 0.62, 0.50)) is Star.SINGLE  # no interval, one seed
    assert star({"where": "x", "value": 0.62}) is Star.NO_CONTROL


def test_data_source_probe_rows_must_clear_the_bag_of_tokens():
    """Probes that beat shuffled labels but not what the tokens alone give away are not starred."""
    g = torch.Generator().manual_seed(0)
    n = 200
    y = torch.arange(n) % 2 == 0
    feats = {f"blocks.{i}.hook_resid_post": torch.randn(n, 4, generator=g) + (0.6 + i) * y[:, None].float()
             for i in range(2)}
    cv = cross_validate(feats, y, torch.arange(n) // 2, ProbeConfig(shuffle_repeats=2))
    rows = cv_rows(cv, "data_source", "base", seed=0)
    logistic = {r["hook"]: r["auroc"] for r in rows if r["method"] == "logistic"}
    assert 0.6 < logistic["blocks.0.hook_resid_post"] < 0.9 < logistic["blocks.1.hook_resid_post"]
    bag = y.float() * 1.6 + torch.randn(n, generator=g)  # a text baseline between the two layers
    rows.append(control_row("data_source", "bag_of_tokens", score_auroc(bag, y, cv.folds), n))
    summary = {r.where: r.to_dict() for r in ProbeResult(rows=rows).summary_rows()}
    weak, strong = summary["blocks.0.hook_resid_post"], summary["blocks.1.hook_resid_post"]
    assert weak["control"] == "bag of tokens" and weak["control_value"] > 0.5
    assert weak["shuffled_labels"] < weak["value"]  # it beats shuffled labels ...
    assert star(weak) is Star.FAILS  # ... but not the bag of tokens: no star
    assert star(strong) is Star.CLEARS


def test_probe_figure_fits_every_value_and_draws_error_bars():
    from workbench.analyses.probe_result import transfer_rows
    from workbench.analyses.probes import transfer_probe

    g = torch.Generator().manual_seed(0)
    n = 100
    feats = {"blocks.0.hook_resid_post": torch.randn(n, 4, generator=g)}
    y = torch.arange(n) % 2 == 0
    cv = cross_validate(feats, y, torch.arange(n) // 2, ProbeConfig(shuffle_repeats=2))
    moved = {h: -x for h, x in feats.items()}  # the control reads the opposite way: AUROC far below 0.3
    tr = transfer_probe({h: x + 1 for h, x in feats.items()}, feats, torch.arange(n), {"control": moved})
    rows = cv_rows(cv, "cross_model", "teacher") + transfer_rows(tr, "cross_model")
    fig = ProbeResult(rows=rows).figures()["cross_model"]
    low = fig.layout.yaxis.range[0]
    for trace in fig.data:
        assert all(v is None or v >= low for v in trace.y), trace.name
    logistic = next(t for t in fig.data if t.name == "logistic (teacher)")
    assert logistic.error_y.array is not None and any(v > 0 for v in logistic.error_y.array)
    assert "one held-out fold" in next(t.name for t in fig.data if t.name.startswith("transfer"))


def test_map_cells_list_every_section_at_a_place():
    cells = map_cells(planted_sections())
    here = cells[Place(1, "mlp")]
    assert set(here) == {"activation_patching", "weights"}
    fig = map_figure(planted_sections(), "one seed")
    heat = fig.data[0]
    i, j = list(heat.y).index("L1"), list(heat.x).index("mlp")
    assert heat.z[i][j] == 2.0 and "1 causal" in heat.text[i][j]
    assert "activation_patching (causal): blocks.1.hook_mlp_out 0.800 vs ctrl 0.050" in heat.customdata[i][j]
    assert map_figure([{"id": "s", "kind": "x", "summary_rows": [row("whole model", 1, 0)]}]) is None


@dataclass
class RowsResult:
    """A Result carrying given summary rows (only the contract)."""

    kind: ClassVar[str] = "activation_patching"
    title: ClassVar[str] = "Activation patching"
    rows: list = field(default_factory=list)
    command: str = "f()"

    def save(self, directory):
        return write_result_files(directory, self.kind, {"rows": self.rows})

    @classmethod
    def load(cls, directory):
        return cls(read_result_files(directory, cls.kind)[0]["rows"])

    def figures(self):
        return {"bars": go.Figure(go.Bar(x=["a"], y=[1]))}

    def summary_rows(self):
        return self.rows


def test_index_opens_with_the_verdict_and_the_map_before_the_table(tmp_path):
    stream = io.StringIO()
    write_report([RowsResult(planted_sections()[0]["summary_rows"])], tmp_path, stream=stream)
    index = (tmp_path / "index.html").read_text()
    assert index.index("VERDICT") < index.index("src='map.html'") < index.index("id='evidence-table'")
    assert index.index("src='map.html'") < index.index("activation_patching_bars.html")
    assert "L1 mlp (activation_patching blocks.1.hook_mlp_out 0.800 vs 0.050)" in index
    assert "<details open><summary>show / hide" in index and "wbFilter" in index and "http" not in index.split("<body>")[0]
    assert (tmp_path / "map.html").is_file()
    out = stream.getvalue().splitlines()
    assert out[0].startswith("VERDICT") and "L1 mlp" in out[1]
    assert any(line.startswith("  activation_patching: 1 of 3 rows clear") for line in out)
    assert "ctrl" not in "\n".join(out)  # the full table is in summary.txt, not on the terminal
    assert "control is" in (tmp_path / "summary.txt").read_text()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stars"] == {"rows": 3, "compared": 3, "starred": 1, "single_seed": 0, "seeds": 1}
    assert report["verdict"][0].startswith("VERDICT") and report["map"] == "map.html"


def test_one_seed_prints_no_sd():
    """A spread of one seed is undefined: printed as such, never as sd 0.000."""
    from workbench.cli.alignment import format_summary as alignment_summary
    from workbench.cli.screening import format_summary as screening_summary

    one = alignment_summary([{"direction": "delta_T", "mean": 0.7, "sd": 0.0, "per_seed": [0.7]}])
    assert "one seed: no sd" in one and "0.000" not in one
    two = alignment_summary([{"direction": "delta_T", "mean": 0.7, "sd": 0.1, "per_seed": [0.6, 0.8]}])
    assert " 0.100 " in two
    row = {"fraction": 0.1, "top_g_trait": [0.2], "random": [0.3], "difference_mean": -0.1, "difference_sd": 0.0}
    text = screening_summary([row])
    assert "one seed: no sd" in text and "± 0.000" not in text
