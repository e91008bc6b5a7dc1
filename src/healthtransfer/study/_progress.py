"""Progress of a study's steps on stderr: a rich bar on a terminal, a line per tenth in logs.

>>> with StepProgress(False, 3, "demo") as advance:  # disabled: advance() does nothing
...     advance("source_lr")
"""

from __future__ import annotations

import time

__all__ = ["StepProgress", "LogProgress", "hms"]


class StepProgress:
    """A rich progress bar when asked for (and a terminal or CI log is there), else nothing."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled, total, label

    def __enter__(self):
        """Returns ``advance(what=None)``: one step done; ``what`` (the step now starting) is shown."""
        if not self.enabled:
            return lambda what=None: None
        from rich.console import Console

        if not Console(stderr=True).is_terminal:
            self._log = LogProgress(self.total, self.label)
            return self._log.advance
        self._log = None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        # on stderr, so that stdout carries only results (e.g. `run --json | jq`)
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           transient=False, console=Console(stderr=True))
        self._p.start()
        self._task = self._p.add_task(self.label, total=self.total)
        self._started = False

        def advance(what=None):
            if what is None:
                self._p.advance(self._task)
                return
            # a step starting: the previous one has finished
            if self._started:
                self._p.advance(self._task)
            self._started = True
            self._p.update(self._task, description=f"{self.label} | {what}")

        return advance

    def __exit__(self, *exc):
        if self.enabled and self._log is not None:
            self._log.finish()
        elif self.enabled:
            if self._started:
                self._p.update(self._task, completed=self.total, description=self.label)
            self._p.stop()
        return False


class LogProgress:
    """Progress for logs (stderr not a terminal): a line when a tenth of the steps is done, or
    every 30 s, with the elapsed time and an estimate of the time left.

    >>> p = LogProgress(4, "demo", out=print, clock=iter([0, 10, 20, 30, 40, 50]).__next__)
    >>> for _ in range(4): p.advance()
    demo: 1/4 done, 0:00:10 elapsed, about 0:00:30 left
    demo: 2/4 done, 0:00:20 elapsed, about 0:00:20 left
    demo: 3/4 done, 0:00:30 elapsed, about 0:00:10 left
    demo: 4/4 done, 0:00:40 elapsed, about 0:00:00 left
    """

    def __init__(self, total: int, label: str, out=None, clock=time.monotonic):
        import sys

        self.total, self.label, self.clock = max(1, total), label, clock
        self.out = out or (lambda line: print(line, file=sys.stderr, flush=True))
        self.t0 = self.last = clock()
        self.done, self.started, self.shown = 0, False, -1

    def advance(self, what=None):
        if what is not None and not self.started:  # the first step starting: nothing done yet
            self.started = True
            return
        self.done = min(self.total, self.done + 1)
        now = self.clock()
        tenth = self.done * 10 // self.total
        if tenth != self.shown or now - self.last >= 30:
            self.shown, self.last = tenth, now
            left = (now - self.t0) / self.done * (self.total - self.done)
            self.out(f"{self.label}: {self.done}/{self.total} done, {hms(now - self.t0)} elapsed, "
                     f"about {hms(left)} left")

    def finish(self):
        if self.done < self.total:
            self.done = self.total - 1
            self.advance()


def hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
