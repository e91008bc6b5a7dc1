"""Group commit for the audit log: concurrent requests share one transaction (one fsync).

With SQLite in WAL mode and ``synchronous=FULL`` (``audit_sync="full"``) every commit waits for
the disk (about 10 ms on the benchmark machine), so one commit per request caps a worker near
100 requests/s whatever the CPU; with the default ``synchronous=NORMAL`` a commit is a write to
the WAL without fsync, and grouping still saves the per-transaction overhead. :class:`GroupCommit` keeps the guarantee (a request returns only after *its*
rows are committed; if the commit fails, every request in the group gets the error and answers
503) while letting the requests that arrived during one commit go together in the next: the
thread that takes the writer lock writes everything queued so far.

Example
-------
>>> written = []
>>> gc = GroupCommit(written.append)
>>> gc.append([{"request_id": "r1"}])
>>> written
[[{'request_id': 'r1'}]]
"""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["GroupCommit"]


class _Ticket:
    __slots__ = ("rows", "done", "error")

    def __init__(self, rows):
        self.rows, self.done, self.error = rows, False, None


class GroupCommit:
    """Wrap ``append(rows)`` (one transaction) so that concurrent callers share transactions."""

    def __init__(self, append: Callable[[list], None]):
        self._append = append
        self._queue_lock = threading.Lock()
        self._writer = threading.Lock()
        self._pending: list[_Ticket] = []

    def append(self, rows: list) -> None:
        if not rows:
            return
        ticket = _Ticket(rows)
        with self._queue_lock:
            self._pending.append(ticket)
        with self._writer:
            if not ticket.done:  # nobody wrote it while we waited: write all that is queued
                with self._queue_lock:
                    group, self._pending = self._pending, []
                error = None
                try:
                    self._append([r for t in group for r in t.rows])
                except BaseException as exc:  # every request of the group fails closed
                    error = exc
                for t in group:
                    t.error, t.done = error, True
        if ticket.error is not None:
            raise ticket.error
