"""Group commit: concurrent callers share transactions, each returns only after its own rows
are written, and a failed commit fails every request of its group (fail closed)."""

import threading
import time

import pytest

from healthtransfer.serve._group_commit import GroupCommit


def _run(n, append):
    gc = GroupCommit(append)
    errors = [None] * n

    def call(i):
        try:
            gc.append([{"request_id": f"r{i}"}])
        except Exception as exc:
            errors[i] = exc
    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    return gc, threads, errors


def test_concurrent_requests_share_commits_and_lose_nothing():
    commits, first_started, release = [], threading.Event(), threading.Event()

    def append(rows):
        if not commits:  # the first commit is slow: the others queue behind it
            first_started.set()
            assert release.wait(10)
        commits.append([r["request_id"] for r in rows])

    gc, threads, errors = _run(20, append)
    threads[0].start()
    assert first_started.wait(10)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10  # spin (no sleep) until the 19 others have queued
    while len(gc._pending) < 19:
        assert time.monotonic() < deadline
    release.set()
    for t in threads:
        t.join(10)
    assert errors == [None] * 20
    written = [r for c in commits for r in c]
    assert sorted(written) == sorted(f"r{i}" for i in range(20))  # each row exactly once
    assert len(commits) == 2  # the slow first one, then all 19 queued rows together


def test_a_failed_commit_fails_every_request_of_the_group():
    class Down(RuntimeError):
        pass

    def append(rows):
        raise Down("disk full")

    _, threads, errors = _run(5, append)
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(isinstance(e, Down) for e in errors)


def test_empty_append_is_a_no_op():
    calls = []
    GroupCommit(calls.append).append([])
    assert calls == []
    with pytest.raises(ZeroDivisionError):
        GroupCommit(lambda rows: 1 / 0).append([{"x": 1}])
