"""Progress of long loops, shown wherever the output goes.

- On a terminal: a tqdm bar (as before).
- In a Jupyter notebook: `tqdm.auto`'s widget (ipywidgets is a dependency).
- Anywhere else (CI logs, pytest's capture, `cmd 2> log`): plain lines on stderr, since a bar there
  is either silence or a wall of carriage returns. A stage that takes a while prints a line every
  `every` seconds with its elapsed time and an estimate of what remains, and one line when it ends
  (stages shorter than `min_seconds` print nothing, so fast loops stay quiet).

    for step in progress_bar(range(n), desc="base seed 0", enabled=progress):
        ...

`stage_log(quiet)` is the matching logger of a command's stage messages: each line on stderr,
prefixed with the time since the logger was made.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

LINE_EVERY_S = 30.0  # seconds between a long stage's progress lines when output is not a terminal
FIRST_LINE_S = 10.0  # the first such line, so a stage's rate and estimate show early
MIN_STAGE_S = 5.0  # stages shorter than this print no line at all


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where `tqdm.auto` draws widgets)."""
    if "IPython" not in sys.modules:
        return False
    try:
        shell = sys.modules["IPython"].get_ipython()
    except AttributeError:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def interactive(stream: TextIO | None = None) -> bool:
    """Whether progress can be drawn live: a notebook, or `stream` (stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    if in_notebook():
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced by an object without isatty
        return False


def format_seconds(seconds: float) -> str:
    """12.3s, 4m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class StageLines:
    """tqdm's interface as used here (iterate, `update`, `set_postfix`, `close`, `with`) writing
    plain lines: `desc: 120/800 it (15%), 30.2s elapsed, ~2m51s left` every `every` seconds
    (the first after `first`), and `desc: 800 it done in 3m21s` at the end of a stage that took at
    least `min_seconds`."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", stream: TextIO | None = None, every: float | None = None,
                 first: float | None = None, min_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`every`, `first`, `min_seconds`: None reads LINE_EVERY_S, FIRST_LINE_S, MIN_STAGE_S."""
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc or "progress", unit
        self.stream, self.clock = stream, clock
        self.every = LINE_EVERY_S if every is None else every
        self.min_seconds = MIN_STAGE_S if min_seconds is None else min_seconds
        self.n, self.postfix, self.closed = 0, "", False
        self.start = clock()
        self.next_line = self.start + (FIRST_LINE_S if first is None else first)

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("StageLines made without an iterable cannot be iterated; call update().")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> StageLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now >= self.next_line and not self.closed:
            self._write(self.progress_line(now))
            self.next_line = now + self.every

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def progress_line(self, now: float) -> str:
        elapsed = now - self.start
        done = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        parts = [f"{self.desc}: {done}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{format_seconds(elapsed)} elapsed")
        if self.total and self.n:
            parts.append(f"~{format_seconds(elapsed / self.n * max(0, self.total - self.n))} left")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        elapsed = self.clock() - self.start
        if elapsed >= self.min_seconds:
            self._write(f"{self.desc}: {self.n} {self.unit} done in {format_seconds(elapsed)}")

    def _write(self, line: str) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        print(line, file=stream, flush=True)


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 enabled: bool = True, unit: str = "it", leave: bool = False) -> Any:
    """A progress display over `iterable` (or one driven by `update`): nothing when not `enabled`,
    a tqdm bar on a terminal or a notebook widget, `StageLines` anywhere else (see the module)."""
    if not enabled:
        return tqdm(iterable, total=total, desc=desc, disable=True)
    if interactive():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    return StageLines(iterable, total=total, desc=desc, unit=unit)


def stage_log(quiet: bool = False, stream: TextIO | None = None,
              clock: Callable[[], float] = time.monotonic) -> Callable[[str], None]:
    """A command's stage logger: `log("section weights")` prints `[1m05s] section weights` on
    stderr (the time since the logger was made), nothing when `quiet`."""
    if quiet:
        return lambda message: None
    start = clock()

    def log(message: str) -> None:
        print(f"[{format_seconds(clock() - start)}] {message}", file=sys.stderr if stream is None else stream,
              flush=True)

    return log
