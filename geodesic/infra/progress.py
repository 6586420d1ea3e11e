"""Progress that suits where it goes: a tqdm bar on a terminal; on a file or a pipe (CI, nohup, a cluster job) a
plain line now and then instead of thousands of carriage-return updates.

    bar = progress(total, "sparsify", unit="step")
    bar.update(1); bar.set_postfix(loss="0.31"); bar.total = 500; bar.close()

A line is written when the count crosses another EVERY_PERCENT of the total, or EVERY_S seconds after the last
line (an unknown total: every EVERY_S seconds), and once at close:

    sparsify: 120/500 step (24%), 31 s, loss=0.31
"""

from __future__ import annotations

import sys
import time
from typing import IO

EVERY_PERCENT = 10
EVERY_S = 30.0


class Lines:
    """The part of tqdm's interface the commands use (n, total, update, set_postfix, set_description, close),
    printed as lines."""

    def __init__(self, total: int | None, desc: str, unit: str = "step", file: IO[str] | None = None,
                 every_percent: float = EVERY_PERCENT, every_s: float = EVERY_S):
        self.total, self.desc, self.unit, self.file = total, desc, unit, file or sys.stderr
        self.every_percent, self.every_s = every_percent, every_s
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last_time = time.monotonic()
        self.last_mark = 0  # the last multiple of every_percent a line was written at

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        mark = self._mark()
        if (mark is not None and mark > self.last_mark) or now - self.last_time >= self.every_s:
            self._write(now)

    def _mark(self) -> int | None:
        if not self.total or self.total <= 0:
            return None
        return int(100 * min(self.n, self.total) / self.total // self.every_percent)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {count} {self.unit}{share}, {now - self.start:.0f} s{tail}"

    def _write(self, now: float) -> None:
        self.last_time = now
        mark = self._mark()
        if mark is not None:
            self.last_mark = mark
        print(self.line(now), file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n:  # a command that stopped before its first step has nothing to report
                self._write(time.monotonic())

    def __enter__(self) -> "Lines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_terminal(file: IO[str]) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False


def progress(total: int | None, desc: str, unit: str = "step", file: IO[str] | None = None):
    """A tqdm bar on a terminal, `Lines` elsewhere; both write to `file` (default stderr)."""
    file = file or sys.stderr
    if is_terminal(file):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, mininterval=0.5, file=file)
    return Lines(total, desc, unit, file)
