"""Fault tests against a real server process: SIGKILL mid-load, then restart.

The promise under test: a prediction is answered 200 only after its audit rows are committed,
so killing the process at any moment loses no acknowledged prediction, and the SQLite log
(WAL, synchronous=FULL) is consistent afterwards. (A read-only audit database answering 503
is covered by ``test_service.py::test_read_only_audit_fails_closed``.)
"""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("sqlalchemy")
pytest.importorskip("skops")

import httpx  # noqa: E402

from _bundles import build_uci_bundle  # noqa: E402
from healthtransfer.serve import keys_add  # noqa: E402

RECORD = {"age": 58.0, "sex": 1, "cp": 4, "trestbps": 140.0, "chol": 240.0, "fbs": 0,
          "restecg": 0, "thalach": 140.0, "exang": 1, "oldpeak": 1.5}
START_TIMEOUT = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle, keys, audit_db, log_path):
    """``healthtransfer serve`` in a subprocess; returns (process, base url) once /healthz is up."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = open(log_path, "ab")
    # options before BUNDLE: `serve` has subcommands, so words after BUNDLE name a command
    proc = subprocess.Popen(
        [sys.executable, "-c", "from healthtransfer.cli import main; main()", "serve",
         "--host", "127.0.0.1", "--port", str(port), "--api-keys", str(keys), "--allow-unsigned",
         "--audit-db", str(audit_db), str(bundle)],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: "
                                 f"{log_path.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("server did not start: " + log_path.read_text(errors="replace"))
        time.sleep(0.1)


def stop_server(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    bundle = build_uci_bundle(d / "bundle", "pooled_lr")
    keys = d / "keys.json"
    return {"dir": d, "bundle": bundle, "keys": keys,
            "key": keys_add(keys, "clinic", ["predict", "read"])}


def test_sigkill_mid_load_loses_no_acknowledged_prediction(env, tmp_path):
    db = tmp_path / "audit.sqlite"
    log = tmp_path / "server.log"
    H = {"X-API-Key": env["key"]}
    proc, url = start_server(env["bundle"], env["keys"], db, log)
    acked: dict[str, int] = {}  # request id -> records in that request
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(i):
        n = 0
        with httpx.Client(base_url=url, headers=H, timeout=10) as c:
            while not stop.is_set():
                n += 1
                size = 1 if n % 3 else 5  # singles and small batches
                recs = [dict(RECORD, age=float(30 + (i * 7 + n + k) % 60)) for k in range(size)]
                body = {"record": recs[0]} if size == 1 else {"records": recs}
                try:
                    r = c.post("/v1/predict", json=body)
                except httpx.HTTPError as exc:  # the kill: connection reset/refused
                    with lock:
                        errors.append(type(exc).__name__)
                    time.sleep(0.01)
                    continue
                if r.status_code == 200:
                    data = r.json()
                    with lock:
                        if len(data["predictions"]) == size:
                            acked[data["request_id"]] = size
                        else:
                            errors.append("HTTP 200 with the wrong number of predictions")
                else:
                    with lock:
                        errors.append(f"HTTP {r.status_code}")

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 150 and time.monotonic() < deadline:  # well into the load
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown hooks, no flush: the worst case
        proc.wait(10)
        time.sleep(0.3)  # the clients see the dead server
        stop.set()
        for t in threads:
            t.join(15)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 150, (len(acked), errors[:5])
    assert errors, "the kill went unnoticed: no request failed"
    assert not [e for e in errors if e.startswith("HTTP")], errors[:5]  # only the kill
    n_acked = len(acked)

    # the log after the crash: consistent, and every acknowledged prediction is in it
    def check():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            return dict(conn.execute(
                "SELECT request_id, COUNT(*) FROM audit GROUP BY request_id").fetchall())

    rows = check()
    missing = {rid: n for rid, n in acked.items() if rows.get(rid) != n}
    assert not missing, f"{len(missing)} acknowledged predictions not (fully) audited"
    # rows beyond the acknowledged ones can only be requests committed just before the kill,
    # whose responses were lost: at most one in flight per client
    assert len(set(rows) - set(acked)) <= len(threads)

    # restart on the same database: it recovers the WAL, appends and keeps everything
    proc, url = start_server(env["bundle"], env["keys"], db, log)
    try:
        assert httpx.get(url + "/readyz", timeout=10).status_code == 200
        r = httpx.post(url + "/v1/predict", json={"records": [RECORD] * 3}, headers=H, timeout=10)
        assert r.status_code == 200
        acked[r.json()["request_id"]] = 3
        count = httpx.get(url + "/v1/audit", headers=H, timeout=10).json()["count"]
        assert count == sum(rows.values()) + 3
    finally:
        stop_server(proc)
    rows = check()
    assert all(rows.get(rid) == n for rid, n in acked.items())
    assert len(acked) == n_acked + 1
