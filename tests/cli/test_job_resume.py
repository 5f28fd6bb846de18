"""The main job saves each section as it finishes and a rerun reuses what was computed from the
same things; a failing section leaves a report of the others that names it as missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.cli import job
from workbench.cli.job import SECTIONS, JobConfig, main, run_sections
from workbench.cli.section_store import KEY_FILE
from workbench.report import read_report, write_report

REPO = Path(__file__).resolve().parents[2]
TINY = ["--max-rows", "150", "--hooks", "hook_embed", "blocks.0.hook_resid_post", "--readers", "base", "student"]


def _args(tiny_organism, out: Path, *more: str) -> list[str]:
    return ["--organism", str(tiny_organism.directory.parent), "--out", str(out), *TINY, *more]


def _forbid(monkeypatch, *names: str) -> None:
    """Make the named sections raise if they are computed (they must be reused)."""
    def refuse(name):
        def section(*args, **kwargs):
            raise AssertionError(f"section {name} was recomputed")
        return section

    for name in names:
        monkeypatch.setitem(SECTIONS, name, refuse(name))


def test_rerun_reuses_every_section_and_writes_the_same_report(tiny_organism, tmp_path, capsys, monkeypatch):
    out = tmp_path / "report"
    assert main(_args(tiny_organism, out)) == 0
    first = (out / "report.json").read_bytes()
    for name in SECTIONS:
        key = json.loads((out / "sections" / name / KEY_FILE).read_text())
        assert key["key"]["section"] == name and key["kind"] == name
        assert (out / "sections" / name / key["result"]).is_file()
    capsys.readouterr()

    _forbid(monkeypatch, *SECTIONS)
    assert main(_args(tiny_organism, out)) == 0  # the same flags; the log says what was reused
    err = capsys.readouterr().err
    for name in SECTIONS:
        assert f"section {name}: reused (saved {out / 'sections' / name})" in err
    assert (out / "report.json").read_bytes() == first
    assert json.loads(first)["missing"] == []


def test_failed_section_is_missing_from_the_report_and_a_rerun_computes_only_it(tiny_organism, tmp_path, capsys,
                                                                                  monkeypatch):
    out = tmp_path / "report"
    sections = ["--sections", "probes", "weights", "delta_patching"]

    def planted(*args, **kwargs):
        raise RuntimeError("planted fault in weights")

    real_weights = SECTIONS["weights"]
    monkeypatch.setitem(SECTIONS, "weights", planted)
    assert main(_args(tiny_organism, out, "--quiet", *sections)) == 2
    captured = capsys.readouterr()
    assert "error: section weights failed: RuntimeError: planted fault in weights" in captured.err
    assert "missing section weights: failed: RuntimeError: planted fault in weights" in captured.out
    report = read_report(out)
    assert [s["id"] for s in report["sections"]] == ["probes", "delta_patching"]  # the others ran after the fault
    assert report["missing"] == [{"section": "weights", "reason": "failed: RuntimeError: planted fault in weights"}]
    assert "planted fault in weights" in (out / "index.html").read_text()
    assert not (out / "sections" / "weights" / KEY_FILE).exists()

    monkeypatch.setitem(SECTIONS, "weights", real_weights)
    _forbid(monkeypatch, "probes", "delta_patching")
    assert main(_args(tiny_organism, out, *sections)) == 0
    err = capsys.readouterr().err
    assert "section weights\n" in err and "section probes: reused" in err and "section delta_patching: reused" in err
    report = read_report(out)
    assert [s["id"] for s in report["sections"]] == ["probes", "weights", "delta_patching"]
    assert report["missing"] == []
    assert (out / "sections" / "weights" / KEY_FILE).is_file()


def test_a_changed_flag_recomputes_the_sections_that_read_it(tiny_organism, tmp_path, capsys, monkeypatch):
    out = tmp_path / "report"
    sections = ["--sections", "probes", "weights"]
    assert main(_args(tiny_organism, out, "--quiet", *sections)) == 0
    capsys.readouterr()

    # --positions: the probes read it, the weight deltas do not
    _forbid(monkeypatch, "weights")
    assert main(_args(tiny_organism, out, *sections, "--positions", "last")) == 0
    err = capsys.readouterr().err
    assert "section probes: recomputing (saved one was computed from other reads.positions)" in err
    assert "section weights: reused" in err
    monkeypatch.undo()

    # --max-rows: other inputs, so every section is recomputed (and the report says so)
    assert main(_args(tiny_organism, out, *sections, "--max-rows", "120")) == 0
    err = capsys.readouterr().err
    assert "section probes: recomputing (saved one was computed from other inputs" in err
    assert "section weights: recomputing (saved one was computed from other inputs)" in err
    assert read_report(out)["meta"]["n_rows"] == 240

    # --fresh recomputes what would be reused
    assert main(_args(tiny_organism, out, *sections, "--max-rows", "120", "--fresh")) == 0
    err = capsys.readouterr().err
    assert "reused" not in err and "section probes\n" in err and "section weights\n" in err


def test_skipped_sections_are_listed_with_their_reason(tiny_organism, tmp_path, capsys):
    from workbench.core.inputs import distillation_inputs
    from workbench.organism import load_seed

    seed = load_seed(tiny_organism.directory)
    data = tiny_organism.directory / "data"
    inputs = distillation_inputs([data / "teacher.jsonl", data / "base.jsonl"], 20)
    run = run_sections(seed.lineage, inputs, JobConfig(), ["directions", "weights", "delta_patching", "screening"])
    assert [r.kind for r in run.results] == ["weights"] and run.errors == []
    assert run.missing == [
        {"section": "directions", "reason": "skipped: no contrastive prompts"},
        {"section": "delta_patching", "reason": f"skipped: {job.skip_reason('delta_patching', seed.lineage, JobConfig())}"},
        {"section": "screening", "reason": f"skipped: {job.skip_reason('screening', seed.lineage, JobConfig())}"},
    ]
    write_report(run.results, tmp_path, missing=run.missing, stream=sys.stdout)
    report = read_report(tmp_path)
    assert report["missing"] == run.missing
    out = capsys.readouterr().out
    assert "missing section directions: skipped: no contrastive prompts" in out
    assert "Missing sections" in (tmp_path / "index.html").read_text()
    # callers that pass only results (notebooks) get an empty list
    write_report(run.results, tmp_path / "plain", stream=None)
    assert read_report(tmp_path / "plain")["missing"] == []


def test_a_killed_job_keeps_its_finished_sections_byte_identical(tiny_organism, tmp_path, capsys, monkeypatch):
    out = tmp_path / "report"
    key = out / "sections" / "probes" / KEY_FILE
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "workbench.probe", *_args(tiny_organism, out, "--quiet"),
           "--sections", "probes", "alignment", "weights"]  # killed during alignment: weights never starts
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240  # a loaded machine is slow; the kill only waits for the first section
    try:
        while not key.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not key.exists() and proc.poll() is not None:
            pytest.fail(f"the job ended (exit {proc.returncode}) before saving probes: {proc.stderr.read().decode()[-500:]}")
        if not key.exists():
            pytest.skip("the job took over 240 s to save its first section here: too slow for this test")
        proc.kill()  # SIGKILL: no clean-up runs
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert not (out / "report.json").exists()

    _forbid(monkeypatch, "probes")
    assert main(_args(tiny_organism, out, "--sections", "probes", "weights")) == 0
    err = capsys.readouterr().err
    assert "section probes: reused" in err and "section weights\n" in err
    assert [s["id"] for s in read_report(out)["sections"]] == ["probes", "weights"]
    # the killed-then-rerun sections are byte-identical to an uninterrupted run's
    clean = tmp_path / "clean"
    monkeypatch.undo()
    assert main(_args(tiny_organism, clean, "--sections", "probes", "weights")) == 0
    assert _section_digests(out) == _section_digests(clean)


def _section_digests(report: Path) -> dict[str, str]:
    """sha256 of every saved section file (the reuse key files aside), JSON files without the
    command line that made them (it names the --out folder and the sections asked for)."""
    import hashlib

    root = report / "sections"
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name == KEY_FILE:
            continue
        raw = p.read_bytes()
        if p.suffix == ".json":
            doc = json.loads(raw)
            doc.get("data", {}).pop("command", None)
            raw = json.dumps(doc, sort_keys=True).encode()
        out[p.relative_to(root).as_posix()] = hashlib.sha256(raw).hexdigest()
    return out
