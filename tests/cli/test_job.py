"""The main job end to end on the shared tiny organism, and its early errors."""

import json
from pathlib import Path

import pytest

from workbench.cli.job import SECTIONS, distillation_inputs, main
from workbench.report import read_report


def test_probe_job_end_to_end_on_tiny_organism(tiny_organism, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["--organism", str(tiny_organism.directory.parent), "--out", str(out), "--max-rows", "150",
            "--hooks", "hook_embed", "blocks.0.hook_resid_post", "--readers", "base", "student", "--quiet"]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = read_report(out)  # every file it names exists
    assert [s["id"] for s in report["sections"]] == list(SECTIONS)
    assert all(s["command"].startswith("python -m workbench.probe") for s in report["sections"])
    probes = report["sections"][0]
    rows = json.loads((out / probes["files"]["result"]).read_text())["data"]["rows"]
    methods = {r["method"] for r in rows}
    assert {"logistic", "ridge", "shuffled", "bag_of_tokens", "oracle", "transfer"} <= methods
    assert {r["reader"] for r in rows if r["method"] == "logistic"} == {"base", "student"}
    for r in rows:
        assert 0.0 <= r["auroc"] <= 1.0
    # the teacher-vs-base probe separates the teacher from the base on held-out prompts
    teacher = [r for r in rows if r["method"] == "transfer" and r["reader"] == "teacher"]
    assert teacher and max(r["auroc"] for r in teacher) > 0.9
    directions = report["sections"][1]
    assert (out / directions["files"]["result"]).with_suffix(".safetensors").is_file()
    assert (out / "index.html").is_file() and (out / "plotly.min.js").is_file()
    assert captured.out.startswith("VERDICT") or "\nVERDICT" in captured.out  # the answer first
    assert "blocks.0.hook_resid_post" in (out / "summary.txt").read_text()  # the full table
    assert max(len(line) for line in captured.out.splitlines()[:-1]) <= 120  # the last line names the files
    # every section speaks the report's schema: where, what (with its unit), the value beside its control
    for s in report["sections"]:
        assert s["summary_rows"], s["id"]
        for r in s["summary_rows"]:
            assert {"where", "group", "measure", "value"} <= set(r), (s["id"], r)
        assert any("control_value" in r and r.get("control") for r in s["summary_rows"]), s["id"]
    strongest = {(r["where"], r["section"]) for r in report["strongest"]}
    for section in ("probes", "directions", "compare", "activation_patching"):
        assert ("blocks.0.hook_resid_post", section) in strongest
    assert ("blocks.0.mlp.out", "weights") in strongest and ("whole model", "delta_patching") in strongest
    assert ("blocks.0.mlp.out", "alignment") in strongest and ("whole model", "alignment") in strongest
    # the causal check: patching every group of the student's delta into the base recovers it all
    patching = next(s for s in report["sections"] if s["id"] == "delta_patching")
    whole = [r for r in json.loads((out / patching["files"]["result"]).read_text())["data"]["rows"] if r["kind"] == "all"]
    assert whole and whole[0]["recovered"] == pytest.approx(1.0)
    # --full prints the evidence table after the verdict (every section reused from the first run)
    assert main([*args, "--full"]) == 0
    full = capsys.readouterr().out
    assert full.startswith(captured.out.split("\n")[0]) and len(full.splitlines()) > len(captured.out.splitlines()) + 20


@pytest.mark.parametrize("args, message", [
    (["--base", "/nonexistent/base", "--teacher", "/nonexistent/teacher"], "'/nonexistent/base' is not a local directory"),
    (["--teacher", "/nonexistent/teacher"], "--base is missing"),
    (["--hooks", "blocks.0.hook_resid_psot"], "Unknown hook 'blocks.0.hook_resid_psot'"),
    (["--readers", "studnet"], "Unknown reader model 'studnet'"),
    (["--sections", "probez"], "Unknown section 'probez'"),
    (["--data", "/nonexistent/d.jsonl"], "No data file"),
])
def test_probe_job_fails_clearly_before_heavy_work(tiny_organism, tmp_path, capsys, args, message):
    code = main(["--organism", str(tiny_organism.directory.parent), "--out", str(tmp_path), "--quiet", *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_distillation_inputs_keep_shared_prompts_and_balance_sources(tiny_organism):
    data = tiny_organism.directory / "data"
    x = distillation_inputs([data / "teacher.jsonl", data / "base.jsonl"], max_rows=100)
    teacher = {p for p, s in zip(x.prompt_ids, x.sources) if s == "teacher"}
    base = {p for p, s in zip(x.prompt_ids, x.sources) if s == "base"}
    assert x.sources.count("teacher") == x.sources.count("base") == 100
    assert teacher == base


def test_background_sections_overlap_the_others_and_keep_the_report_order(monkeypatch):
    # screening (retrains in worker processes) starts first in a thread when workers > 1: the earlier-listed
    # in-process section here waits for it to have started, which a serial run (in the listed order) never allows
    import threading

    from workbench.cli import job
    from workbench.core.errors import DataError

    screening_started = threading.Event()

    def screening(lineage, inputs, config):
        screening_started.set()
        return "screened"

    def probes(lineage, inputs, config):
        if config.workers > 1 and not screening_started.wait(timeout=30):
            raise AssertionError("the background section did not start beside the others")
        return "probed"

    def broken(lineage, inputs, config):
        raise DataError("planted failure")

    monkeypatch.setitem(job.SECTIONS, "probes", probes)
    monkeypatch.setitem(job.SECTIONS, "screening", screening)
    monkeypatch.setitem(job.SECTIONS, "weights", broken)
    monkeypatch.setattr(job, "skip_reason", lambda name, lineage, config: None)
    for workers in (2, 1):
        screening_started.clear()
        logged: list[str] = []
        config = job.JobConfig(workers=workers, organism_dir=Path("organism/seed0"))
        run = job.run_sections(None, None, config, ["probes", "weights", "screening"], log=logged.append)
        assert run.results == ["probed", "screened"]  # the listed order, whatever finished first
        assert run.missing == [{"section": "weights", "reason": "failed: planted failure"}]
        assert logged[0] == ("section screening" if workers > 1 else "section probes")
    # without an organism the screening section ranks rows on the job's own models: never beside the others
    assert not job.in_background("screening", job.JobConfig(workers=2))
    assert not job.in_background("probes", job.JobConfig(workers=2, organism_dir=Path("organism/seed0")))


def test_channels_and_leaderboard_sections_run_on_request_with_an_organism(tiny_organism, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["--organism", str(tiny_organism.directory.parent), "--out", str(out),
            "--sections", "channels", "leaderboard", "--quiet", "--workers", "1"]
    assert main(args) == 0, capsys.readouterr().err
    report = read_report(out)
    by_id = {s["id"]: s for s in report["sections"]}
    assert set(by_id) == {"channels", "leaderboard"}, report.get("missing")
    groups = {r["group"] for r in by_id["channels"]["summary_rows"]}
    assert groups == {"divergence", "divergence_kl", "entangled", "prompting", "shuffle", "single_layer"}
    detectors = {r["where"] for r in by_id["leaderboard"]["summary_rows"]}
    assert {"g_trait", "oracle", "bag_of_tokens", "entangled_frequency"} <= detectors
    assert "channels" in (out / "summary.txt").read_text()
