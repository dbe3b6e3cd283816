"""A small progress bar for long loads (standard library only).

On a terminal it redraws one line in place (at most every ``min_interval`` seconds); on
anything else (a pipe, a log file, pytest's capture) it writes one plain line each time another
tenth of the work is done, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Optional

__all__ = ["Progress"]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Counts ``update(n)`` calls towards ``total``; use as a context manager or call ``close()``.

    Args:
        total: the amount of work (e.g. patterns); ``0`` is allowed.
        label: printed before the bar.
        unit: printed after the counts ("patterns", "queries").
        stream: where to write; stderr by default.
        enabled: ``False`` makes every method a no-op.
        width: bar width in characters (terminal mode).
        min_interval: minimum seconds between terminal redraws.
    """

    def __init__(
        self,
        total: int,
        label: str = "",
        unit: str = "",
        stream: Optional[IO[str]] = None,
        enabled: bool = True,
        width: int = 30,
        min_interval: float = 0.1,
    ) -> None:
        self.total = max(0, int(total))
        self.label = label
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.width = width
        self.min_interval = min_interval
        self.done = 0
        self.started = time.perf_counter()
        self._last_draw = 0.0
        self._tenths_reported = 0
        self._closed = False
        isatty = getattr(self.stream, "isatty", None)
        try:
            self.tty = bool(isatty()) if isatty is not None else False
        except (ValueError, OSError):
            self.tty = False
        if self.enabled and self.tty:
            self._draw(force=True)

    # ------------------------------------------------------------------ public
    def update(self, n: int = 1) -> None:
        if not self.enabled or self._closed:
            return
        self.done = min(self.total, self.done + int(n)) if self.total else self.done + int(n)
        if self.tty:
            self._draw()
        else:
            self._report_tenths()

    def close(self) -> None:
        if not self.enabled or self._closed:
            return
        if self.tty:
            self._draw(force=True)
            self._write("\n")
        elif self._tenths_reported < 10:
            self._line(self._fraction())
        self._closed = True

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _fraction(self) -> float:
        if self.total == 0:
            return 1.0
        return min(1.0, self.done / self.total)

    def _counts(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.done:,}/{self.total:,}{unit}"

    def _rate(self, elapsed: float) -> str:
        if elapsed <= 0 or self.done == 0:
            return ""
        unit = self.unit or "it"
        return f", {self.done / elapsed:,.0f} {unit}/s"

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (ValueError, OSError):  # closed stream: progress is never worth an exception
            self.enabled = False

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_draw < self.min_interval and self.done < self.total:
            return
        self._last_draw = now
        fraction = self._fraction()
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = now - self.started
        eta = ""
        if 0 < self.done < self.total and elapsed > 0:
            eta = f", ETA {_duration(elapsed * (self.total - self.done) / self.done)}"
        label = f"{self.label} " if self.label else ""
        self._write(
            f"\r{label}[{bar}] {fraction * 100:5.1f}% {self._counts()} "
            f"({_duration(elapsed)}{self._rate(elapsed)}{eta})\x1b[K"
        )

    def _report_tenths(self) -> None:
        tenths = int(self._fraction() * 10 + 1e-9)
        if tenths > self._tenths_reported:
            self._tenths_reported = tenths
            self._line(tenths / 10)

    def _line(self, fraction: float) -> None:
        elapsed = time.perf_counter() - self.started
        label = f"{self.label}: " if self.label else ""
        self._write(f"{label}{fraction * 100:3.0f}% {self._counts()} ({_duration(elapsed)}{self._rate(elapsed)})\n")
