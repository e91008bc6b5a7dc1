"""The audit log on a real PostgreSQL server (a throwaway cluster on loopback).

A session fixture runs ``initdb`` + ``pg_ctl start`` in a temporary directory (as the
``postgres`` user when the tests run as root: PostgreSQL refuses to run as root), listening on
127.0.0.1 only, and stops it afterwards. Skipped, with the reason, when the PostgreSQL server
binaries (Debian: ``apt-get install postgresql``) or psycopg 3 are missing.
"""

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("skops")

from fastapi.testclient import TestClient  # noqa: E402

from _bundles import build_uci_bundle  # noqa: E402
from healthtransfer.serve import create_app, keys_add  # noqa: E402

RECORD = {"age": 58.0, "sex": 1, "cp": 4, "trestbps": 140.0, "chol": 240.0, "fbs": 0,
          "restecg": 0, "thalach": 140.0, "exang": 1, "oldpeak": 1.5}


def _pg_bin(name: str) -> str | None:
    def major(path):  # /usr/lib/postgresql/<major>/bin/<name>
        v = Path(path).parent.parent.name
        return int(v) if v.isdigit() else 0

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=major)
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]' (in the serve extra)")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found in "
                    "/usr/lib/postgresql/*/bin or PATH: apt-get install postgresql")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # PostgreSQL will not run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        runuser = shutil.which("runuser")
        if not runuser:
            pytest.skip("running as root and `runuser` is missing")
        prefix = [runuser, "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="ht-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if owner is not None:
        for p in (base, sock):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    port = _free_port()

    def run(*cmd, timeout=60):
        return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout)

    r = run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-locale", "--no-sync")
    if r.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed: {r.stderr.strip()[-300:]}")
    opts = (f"-k {sock} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50 -c shared_buffers=16MB")
    r = run(pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "server.log"), "-w",
            "-t", "60", "start", timeout=90)
    if r.returncode != 0:
        log = (base / "server.log").read_text(errors="replace")[-500:] if (
            base / "server.log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {r.stdout}{r.stderr}{log}")
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE audit_test")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/audit_test"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("pg")
    bundle = build_uci_bundle(d / "bundle", "pooled_lr")
    keys = d / "keys.json"
    return {"bundle": bundle, "keys_file": keys,
            "key": keys_add(keys, "admin", ["predict", "read"])}


def _rows(url):
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(
                "SELECT request_id, key_id, model_version, input_hash, output FROM audit"))]
    finally:
        eng.dispose()


def test_postgres_audit_concurrent_no_loss_and_restart(env, postgres_url):
    H = {"X-API-Key": env["key"]}
    app = create_app(env["bundle"], api_keys_file=env["keys_file"], audit_url=postgres_url,
                     allow_unsigned=True)
    acked: dict[str, float] = {}
    failures: list = []
    lock = threading.Lock()
    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/readyz").status_code == 200
        start = threading.Barrier(8)

        def worker(i):
            start.wait()
            for j in range(25):
                rec = dict(RECORD, age=float(30 + (i * 25 + j) % 60))
                r = c.post("/v1/predict", json={"record": rec}, headers=H)
                with lock:
                    if r.status_code == 200:
                        acked[r.json()["request_id"]] = r.json()["predictions"][0]["probability"]
                    else:
                        failures.append((r.status_code, r.text[:200]))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert c.get("/v1/audit", headers=H).json()["count"] == 200
        model_version = app.state.bundle.model_version
    app.state.audit.close()
    assert not failures, failures[:3]
    assert len(acked) == 200  # request ids are unique

    rows = _rows(postgres_url)
    assert len(rows) == 200
    by_id = {r["request_id"]: r for r in rows}
    assert set(by_id) == set(acked)  # every acknowledged prediction, nothing else
    for rid, p in acked.items():
        row = by_id[rid]
        assert row["key_id"] == "admin" and row["model_version"] == model_version
        assert len(row["input_hash"]) == 64
        assert json.loads(row["output"])["probability"] == p

    # restart: a new app on the same database keeps the log and appends to it
    app2 = create_app(env["bundle"], api_keys_file=env["keys_file"], audit_url=postgres_url,
                     allow_unsigned=True)
    with TestClient(app2, base_url="http://localhost") as c:
        assert c.get("/readyz").status_code == 200  # the write probe is rolled back
        r = c.post("/v1/predict", json={"records": [RECORD] * 3}, headers=H)
        assert r.status_code == 200
        assert c.get("/v1/audit", headers=H).json()["count"] == 203
    app2.state.audit.close()
    rows = _rows(postgres_url)
    assert len(rows) == 203 and set(acked) <= {r["request_id"] for r in rows}
    assert sum(row["request_id"] == r.json()["request_id"] for row in rows) == 3
