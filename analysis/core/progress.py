"""Progress and time left: `Eta` estimates the time left of a long computation from its
measured progress, `format_duration` writes it for people. Background jobs, the removal
sweep's own progress messages and the pages use them."""
from __future__ import annotations


class Eta:
    """Time left from measured progress: the rate between the first report above 0 (after
    the first batch, so start-up costs are left out) and the latest one."""

    def __init__(self) -> None:
        self.first: tuple | None = None  # (time, fraction)
        self.last: tuple | None = None

    def report(self, fraction: float, now: float) -> None:
        if fraction <= 0:  # set-up phases report 0: they do not count towards the rate
            return
        if self.first is None:
            self.first = (now, fraction)
        self.last = (now, fraction)

    def left(self, now: float) -> float | None:
        """Seconds left, counted from `now`; None until two reports show progress."""
        if self.first is None or self.last is None:
            return None
        (t0, f0), (t1, f1) = self.first, self.last
        if f1 <= f0 or t1 <= t0:
            return None
        return max(0.0, (1.0 - f1) * (t1 - t0) / (f1 - f0) - (now - t1))


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
