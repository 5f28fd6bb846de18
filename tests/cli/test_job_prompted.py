"""The main job with a prompted teacher (`--teacher-system-prompt`): the base loaded once, the
weights section skipped with its reason, the log-prob sections (alignment's oracle and
per-position divergence) and the trait sections written from the prompted base."""

from __future__ import annotations

import json

import pytest

from test_job_hf import hf_job_dirs  # noqa: F401  (the module fixture: GPT-2 dirs with a chat template)
from workbench.cli.job import main
from workbench.report import read_report

SECTIONS = ["compare", "weights", "delta_patching", "activation_patching", "alignment"]


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
                 "--control", dirs["control"], "--data", data, "--target", "owl", "--max-rows", "10",
                 "--hooks", "blocks.1.hook_resid_post", "--quiet", "--out", str(out), "--sections", *SECTIONS])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # the lineage boots base, student and control once each: no teacher model (later boots are patching's working copies)
    assert [p.rsplit("/", 1)[-1] for p in booted[:3]] == ["base", "student", "control"]
    assert not any(p.endswith("teacher") for p in booted)
    report = read_report(out)
    by_id = {s["id"]: s for s in report["sections"]}
    assert {"compare", "delta_patching", "activation_patching", "alignment"} <= set(by_id), report.get("missing")
    missing = {m["section"]: m["reason"] for m in report["missing"]}
    assert set(missing) == {"weights"} and "teacher's weights" in missing["weights"] and "prompted" in missing["weights"]
    assert "system prompt" in report["meta"]["organism"]
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
