"""The report opens in a real browser: `index.html` and every figure page it links load in headless
Chromium with no console error and no page error, and each figure page has a plotly-drawn svg.

Drives the system Chromium (Debian's /usr/bin/chromium, or $WORKBENCH_CHROMIUM) through Python
playwright; never downloads a browser. Skips, saying which is missing, where either is absent
(`.ci/run` installs Chromium where apt allows). The report is built from small synthetic results in
about a second."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(tempfile.gettempdir()) / "workbench-report-index.png"


def chromium_path() -> str | None:
    """$WORKBENCH_CHROMIUM, else the first Chromium on PATH (Debian's package is `chromium`)."""
    env = os.environ.get("WORKBENCH_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless system Chromium with a fresh profile, or a skip naming what is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium installed (apt-get install chromium, or set WORKBENCH_CHROMIUM): browser check skipped")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            context.close()


def synthetic_report(out: Path) -> Path:
    """A report of a probe section and a direction section on planted data (seconds)."""
    from workbench.analyses.directions import DirectionResult, mean_difference, random_direction_aurocs, shift_along
    from workbench.analyses.probe_result import ProbeResult, control_row, cv_rows, transfer_rows
    from workbench.analyses.probes import ProbeConfig, cross_validate, score_auroc, transfer_probe
    from workbench.report import write_report

    g = torch.Generator().manual_seed(0)
    n, d = 120, 6
    y = torch.arange(n) % 2 == 0
    feats = {f"blocks.{i}.hook_resid_post": torch.randn(n, d, generator=g) + (i == 1) * 2.0 * y[:, None].float()
             for i in range(2)}
    cv = cross_validate(feats, y, torch.arange(n) // 2, ProbeConfig(shuffle_repeats=2))
    rows = cv_rows(cv, "data_source", "base", seed=0)
    rows.append(control_row("data_source", "oracle", score_auroc(y.float() + torch.randn(n, generator=g), y, cv.folds), n))
    moved = {h: x + 0.5 for h, x in feats.items()}
    rows += transfer_rows(transfer_probe(moved, feats, torch.arange(n), {"student": moved, "control": feats}),
                          "cross_model", seed=0)
    probes = ProbeResult(rows=rows, command="python -m workbench.probe --synthetic", config={})

    a = {"blocks.0.hook_resid_post": torch.randn(50, 4, generator=g) + 1}
    b = {"blocks.0.hook_resid_post": torch.randn(50, 4, generator=g)}
    rand = random_direction_aurocs({h: torch.cat([a[h], b[h]]) for h in a}, torch.arange(100) < 50, k=8)
    detection = [dict(direction="teacher_minus_base", hook=h, reader="base", auroc=0.7,
                      random_mean=float(rand[h].mean()), random_p95=0.55, n=100) for h in a]
    shifts = [dict(direction="teacher_minus_base", hook=h, model=m, **v)
              for m, x in {"student": a, "control": b}.items() for h, v in shift_along(x, b, a).items()]
    directions = DirectionResult(directions={"teacher_minus_base": mean_difference(a, b)}, detection=detection,
                                 shifts=shifts, command="python -m workbench.probe --synthetic")
    write_report([probes, directions], out, command="python -m workbench.probe --synthetic", stream=None)
    return out


def open_page(context, path: Path) -> tuple[object, list[str]]:
    """Load a local file; returns the page and every console error and uncaught page error."""
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, errors


def test_report_pages_load_in_chromium_without_errors(browser, tmp_path):
    from workbench.report import read_report

    out = synthetic_report(tmp_path / "report")
    report = read_report(out)
    figures = [out / f for s in report["sections"] for f in s["files"]["figures"].values()]
    assert figures, "the synthetic report has no figure pages"

    page, errors = open_page(browser, out / "index.html")
    assert page.title(), "index.html has no title"
    links = page.eval_on_selector_all("a[href$='.html']", "els => els.map(e => e.getAttribute('href'))")
    assert {f.name for f in figures} <= {Path(h).name for h in links}, "index.html links every figure page"
    page.screenshot(path=str(SCREENSHOT))  # the first screen, for a person to look at
    assert not errors, errors
    page.close()

    for figure in figures:
        page, errors = open_page(browser, figure)
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=15_000)  # plotly drew the figure
        assert page.locator(".js-plotly-plot .main-svg").count() >= 1, figure.name
        assert not errors, f"{figure.name}: {errors}"
        page.close()
