"""Progress where output is not a terminal: a line per long stage with its elapsed time and an
estimate of what remains (CI logs, pytest's capture), bars only on a terminal, nothing when off."""

from __future__ import annotations

import io

import pytest
import torch

from workbench.core import progress
from workbench.core.progress import StageLines, format_seconds, progress_bar, stage_log


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_long_stage_prints_elapsed_and_an_estimate_then_one_closing_line():
    clock, out = FakeClock(), io.StringIO()
    bar = StageLines(range(100), desc="base seed 0", stream=out, clock=clock, first=10, every=30, min_seconds=5)
    for i in bar:
        clock.now += 0.5  # 0.5 s a step: 50 s in all
    lines = out.getvalue().splitlines()
    # first line after 10 s (step 20), then every 30 s (step 80), then the closing line
    assert lines[0] == "base seed 0: 20/100 it (20%), 10.0s elapsed, ~40.0s left"
    assert lines[1] == "base seed 0: 80/100 it (80%), 40.0s elapsed, ~10.0s left"
    assert lines[-1] == "base seed 0: 100 it done in 50.0s"
    assert len(lines) == 3


def test_a_short_stage_prints_nothing_and_update_driven_stages_close_once():
    clock, out = FakeClock(), io.StringIO()
    with StageLines(total=4, desc="student", stream=out, clock=clock) as bar:
        for _ in range(4):
            clock.now += 0.1
            bar.update()
    assert out.getvalue() == ""
    clock2, out2 = FakeClock(), io.StringIO()
    bar = StageLines(total=2, desc="capture", unit="batch", stream=out2, clock=clock2, min_seconds=1)
    bar.set_postfix(seed=3)
    clock2.now = 75.0
    bar.update(2)  # past the first line: a progress line with the postfix
    bar.close()
    bar.close()
    assert out2.getvalue().splitlines() == ["capture: 2/2 batch (100%), 1m15s elapsed, ~0.0s left, seed=3",
                                            "capture: 2 batch done in 1m15s"]


def test_format_seconds():
    assert [format_seconds(s) for s in (3.21, 65, 3725)] == ["3.2s", "1m05s", "1h02m"]


def test_progress_bar_chooses_lines_off_a_terminal_and_nothing_when_disabled(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert isinstance(progress_bar(range(3), desc="x"), StageLines)
    off = progress_bar(range(3), desc="x", enabled=False)
    assert not isinstance(off, StageLines) and off.disable and list(off) == [0, 1, 2]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    bar = progress_bar(range(3), desc="x")
    assert not isinstance(bar, StageLines) and not bar.disable  # a tqdm bar
    bar.close()


def test_a_real_stage_run_writes_its_line_to_captured_stderr(monkeypatch, capsys):
    """The organism's base training, 20 steps, with stderr captured (not a terminal): one line with
    the stage's name, its step count and its elapsed time."""
    from workbench.core.models import boot_native
    from workbench.organism.config import preset
    from workbench.organism.tokenizer import Tokenizer
    from workbench.organism.training import pretrain_base

    monkeypatch.setattr(progress, "MIN_STAGE_S", 0.0)  # print even this short stage
    cfg = preset("tiny", base_steps=20, base_warmup=5)
    tok = Tokenizer.default()
    model = boot_native(cfg.model.native_config(len(tok), 0), device=torch.device("cpu"))
    pretrain_base(model, tok, cfg, 0, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err  # no bar redraws in a log
    line = [x for x in err.splitlines() if x.startswith("base seed 0:")]
    assert len(line) == 1 and line[0].startswith("base seed 0: 20 it done in ") and line[0].endswith("s"), err


def test_stage_log_prefixes_elapsed_time_and_is_silent_when_quiet():
    clock, out = FakeClock(), io.StringIO()
    log = stage_log(stream=out, clock=clock)
    clock.now = 65.0
    log("section weights")
    assert out.getvalue() == "[1m05s] section weights\n"
    quiet = io.StringIO()
    stage_log(True, stream=quiet)("section weights")
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("quiet", [False, True])
def test_show_progress_is_on_unless_quiet_wherever_output_goes(quiet, monkeypatch):
    import argparse

    from workbench.cli import common

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert common.show_progress(argparse.Namespace(quiet=quiet)) is (not quiet)
