"""`serve --workers 2`: two uvicorn worker processes on loopback share one SQLite (WAL) audit
log; under concurrent load no acknowledged prediction lacks its audit record.

The server is a real subprocess on 127.0.0.1; readiness is read from its log lines (no
sleeping), the load is bounded (8 threads x 30 requests, each on a new connection so the
kernel spreads them over both workers), and every wait has a deadline.
"""

import os
import selectors
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from _bundles import FEATURES, build_uci_bundle, uci_frames  # noqa: E402
from healthtransfer.serve import keys_add  # noqa: E402

INTS = {"sex", "cp", "fbs", "restecg", "exang"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_lines(proc, needle: str, count: int, deadline: float) -> list[str]:
    """Read the server's output until ``needle`` appeared ``count`` times (or fail).

    Reads the pipe's file descriptor directly: a buffered ``readline`` may pull several lines
    into Python's buffer at once, and ``select`` never reports those as readable again."""
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    buf, lines = b"", []
    while sum(needle in line for line in lines) < count:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError("server not ready:\n" + "".join(lines[-40:]))
        if sel.select(timeout=left):
            chunk = os.read(fd, 65536)
            if not chunk:
                continue
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [d.decode("utf-8", "replace") + "\n" for d in done]
    return lines


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _cpu(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def test_two_workers_lose_no_audit_record(tmp_path):
    bundle = build_uci_bundle(tmp_path / "bundle", "pooled_lr")
    key = keys_add(tmp_path / "keys.json", "clinic", ["predict"])
    audit = tmp_path / "audit.sqlite"
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from healthtransfer.cli import main; main()", "serve",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
         "--api-keys", str(tmp_path / "keys.json"), "--allow-unsigned", "--audit-db", str(audit), str(bundle)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)
    try:
        _wait_for_lines(proc, "Application startup complete", 2, time.monotonic() + 400)  # start-up takes minutes on a loaded machine
        workers = [w for w in _children(proc.pid) if b"resource_tracker" not in
                   Path(f"/proc/{w}/cmdline").read_bytes()]
        assert len(workers) == 2
        cpu0 = {w: _cpu(w) for w in workers}
        _, train, test = uci_frames()
        recs = [{k: (None if v != v else (int(v) if k in INTS else float(v)))
                 for k, v in r.items()} for r in test[FEATURES].to_dict("records")]
        acknowledged, failures = [0], []
        lock = threading.Lock()

        def client(t):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                              headers={"X-API-Key": key, "Connection": "close"}) as c:
                for i in range(30):
                    j = (t * 30 + i) % len(recs)
                    body = ({"records": recs[j:j + 5]} if i % 3 == 0 and j + 5 <= len(recs)
                            else {"record": recs[j]})
                    r = c.post("/v1/predict", json=body)
                    with lock:
                        if r.status_code == 200:
                            acknowledged[0] += len(r.json()["predictions"])
                        else:
                            failures.append(r.status_code)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "load did not finish in 120 s"
        assert failures == []
        busy = [w for w in cpu0 if _cpu(w) - cpu0[w] > 0.05]
        assert len(busy) >= 2, "both workers should have served requests"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with sqlite3.connect(audit) as conn:
        rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM audit").fetchone()
    assert acknowledged[0] >= 240
    assert rows[0] == acknowledged[0]  # every acknowledged prediction has its audit row
    assert rows[1] == 240  # and every request id is there


def test_a_worker_freezes_its_startup_heap(tmp_path, monkeypatch):
    """Each worker takes its start-up objects out of the cyclic GC (full collections over them
    were 250-400 ms pauses inside requests); the app itself is unchanged."""
    import gc
    import json

    from healthtransfer.serve._workers import ENV, app_from_env

    bundle = build_uci_bundle(tmp_path / "bundle", "pooled_lr")
    keys_add(tmp_path / "keys.json", "clinic", ["predict"])
    monkeypatch.setenv(ENV, json.dumps({"bundle": str(bundle), "allow_unsigned": True,
                                        "api_keys_file": str(tmp_path / "keys.json"),
                                        "audit_url": str(tmp_path / "audit.sqlite")}))
    gc.unfreeze()
    try:
        app = app_from_env()
        assert gc.get_freeze_count() > 10_000 and app.state.predictor.path == "compiled"
    finally:
        gc.unfreeze()
