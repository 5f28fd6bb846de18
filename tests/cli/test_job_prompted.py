"""The main job with a prompted teacher (`--teacher-system-prompt`): the base loaded once, the
weights section skipped with its reason (the only missing one: every other section runs), the
log-prob sections (probes' and alignment's oracle, per-position divergence) and the activation
sections (the teacher's shift, its probe, its trait direction) written from the prompted base, and
the report naming which sections used it."""

from __future__ import annotations

import json

import pytest

from test_job_hf import hf_job_dirs  # noqa: F401  (the module fixture: GPT-2 dirs with a chat template)
from workbench.cli.job import SECTIONS, main
from workbench.report import read_report



def test_job_with_a_prompted_teacher(hf_job_dirs, tmp_path, capsys, monkeypatch):  # noqa: F811
    import workbench.core.hf as hf

    dirs, data = hf_job_dirs
    booted: list[str] = []
    boot = hf.boot_hf_dir
    monkeypatch.setattr(hf, "boot_hf_dir", lambda path, **kw: booted.append(str(path)) or boot(path, **kw))
    prompt = tmp_path / "owl.txt"
    prompt.write_text("the owl the owl\n")
    out = tmp_path / "report"
    code = main(["--base", dirs["base"], "--teacher-system-prompt", f"@{prompt}", "--student", dirs["student"],
                 "--control", dirs["control"], "--data", data, "--target", "owl", "--max-rows", "20",
                 "--hooks", "blocks.1.hook_resid_post", "--quiet", "--out", str(out)])  # every section
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # the lineage boots base, student and control once each: no teacher model (later boots are patching's working copies)
    assert [p.rsplit("/", 1)[-1] for p in booted[:3]] == ["base", "student", "control"]
    assert not any(p.endswith("teacher") for p in booted)
    report = read_report(out)
    by_id = {s["id"]: s for s in report["sections"]}
    assert set(by_id) == set(SECTIONS) - {"weights"}, report.get("missing")
    missing = {m["section"]: m["reason"] for m in report["missing"]}
    assert set(missing) == {"weights"} and "teacher's weights" in missing["weights"] and "prompted" in missing["weights"]
    assert "system prompt" in report["meta"]["organism"]
    assert report["meta"]["sections using the prompted base"] == ["probes", "directions", "compare", "alignment"]
    per_section = report["meta"]["prompted teacher, per section"]
    assert "does not read the teacher" in per_section["delta_patching"] and "skipped" in per_section["weights"]
    compare = json.loads((out / by_id["compare"]["files"]["result"]).read_text())["data"]
    assert compare["parents"]["teacher"] == "base" and compare["cos"]["student~teacher"][0] is not None
    probes = json.loads((out / by_id["probes"]["files"]["result"]).read_text())["data"]
    oracle = [r for r in probes["rows"] if r["method"] == "oracle"]
    assert len(oracle) == 1 and oracle[0]["reader"] == "teacher/base" and oracle[0]["auroc"] is not None
    assert any(r["task"] == "data_source" and r["reader"] == "teacher" for r in probes["rows"])
    directions = json.loads((out / by_id["directions"]["files"]["result"]).read_text())["data"]
    assert any(r["model"] == "student" for r in directions["shifts"])  # along the prompted teacher's shift
    align = json.loads((out / by_id["alignment"]["files"]["result"]).read_text())["data"]
    directions = {r["direction"] for r in align["detection"]}
    assert "delta_T" not in directions and {"g_trait", "log p_T/p_base (oracle)"} <= directions
    assert align["meta"]["teacher"]["system_prompt"] == "the owl the owl" and "path" in align["meta"]["left_out"]
    assert align["meta"]["teacher"]["rows_swapped"] > 0  # this template has no default system block: all swapped
    assert align["token_reference"]  # per-position log-ratio and KL from the prompted base


def test_prompted_teacher_flags_are_checked_before_loading(hf_job_dirs, tmp_path, capsys):  # noqa: F811
    dirs, data = hf_job_dirs
    common = ["--data", data, "--quiet", "--out", str(tmp_path / "r")]
    assert main(["--base", dirs["base"], "--teacher", dirs["teacher"], "--teacher-system-prompt", "x", *common]) == 2
    assert "pass one" in capsys.readouterr().err
    assert main(["--base", dirs["base"], "--teacher-system-prompt", " ", *common]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["--teacher-system-prompt", "the owl", *common]) == 2
    assert "--base" in capsys.readouterr().err
