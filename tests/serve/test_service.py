"""Prediction service: validation, auth, audit, explain, drift, metrics, web page, fuzzing."""

import logging
import os
import re
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("skops")

from fastapi.testclient import TestClient  # noqa: E402

from _bundles import FEATURES, build_uci_bundle, uci_frames  # noqa: E402
from healthtransfer.serve import audit_export, create_app, keys_add  # noqa: E402

BASE = "http://localhost"  # the Host allow-list accepts loopback names only
RECORD = {"age": 58.0, "sex": 1, "cp": 4, "trestbps": 140.0, "chol": 240.0, "fbs": 0,
          "restecg": 0, "thalach": 140.0, "exang": 1, "oldpeak": 1.5}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    bundle = build_uci_bundle(d / "bundle", "pooled_lr")
    keys = d / "keys.json"
    k = {"predict": keys_add(keys, "clinic", ["predict"]),
         "read": keys_add(keys, "ops", ["read"]),
         "both": keys_add(keys, "admin", ["predict", "read"])}
    return {"dir": d, "bundle": bundle, "keys_file": keys, "keys": k}


def _app(env, audit_name="audit.sqlite", **kw):
    kw.setdefault("max_batch", 50)
    kw.setdefault("allow_unsigned", True)  # signing is tested in test_security.py
    return create_app(env["bundle"], api_keys_file=env["keys_file"],
                      audit_url=kw.pop("audit_url", env["dir"] / audit_name), **kw)


@pytest.fixture(scope="module")
def client(env):
    with TestClient(base_url=BASE, app=_app(env)) as c:
        yield c


def H(env, which="both"):
    return {"X-API-Key": env["keys"][which]}


def _rows(n, site="va"):
    _, train, test = uci_frames()
    src = test if site == "va" else train[train["site"] == site]
    recs = (src[FEATURES].head(n) if site == "va" else src[FEATURES].sample(
        n, random_state=0)).to_dict("records")
    return [{k: (None if v != v else (int(v) if k in ("sex", "cp", "fbs", "restecg", "exang")
                                      else float(v))) for k, v in r.items()} for r in recs]


# -- prediction -------------------------------------------------------------------------------
def test_predict_single_and_batch(client, env):
    r = client.post("/v1/predict", json={"record": RECORD}, headers=H(env, "predict"))
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert 0 <= p["probability"] <= 1 and p["class"] in (0, 1)
    assert p["flagged"] is False and p["flags"]["missing"] == []
    assert r.headers["X-Request-ID"] == r.json()["request_id"]

    rows = _rows(10)
    r = client.post("/v1/predict", json={"records": rows}, headers=H(env, "predict"))
    assert r.status_code == 200
    from healthtransfer.bundle import load_bundle

    want = load_bundle(env["bundle"]).predict_risk(rows)
    got = [p["probability"] for p in r.json()["predictions"]]
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-12


def test_missing_and_outside_training_range_are_flagged(client, env):
    rec = dict(RECORD, chol=None, age=99.0)  # allowed (18-100) but above the training max
    del rec["fbs"]
    r = client.post("/v1/predict", json={"record": rec}, headers=H(env))
    assert r.status_code == 200
    p = r.json()["predictions"][0]
    assert p["flagged"] is True
    assert set(p["flags"]["missing"]) == {"chol", "fbs"}
    assert p["flags"]["outside_training_range"] == ["age"]


def test_bearer_token_works(client, env):
    r = client.post("/v1/predict", json={"record": RECORD},
                    headers={"Authorization": f"Bearer {env['keys']['predict']}"})
    assert r.status_code == 200


# -- validation -------------------------------------------------------------------------------
def _errors(r):
    assert r.status_code == 422, r.text
    errs = r.json()["errors"]
    assert all("input" not in e for e in errs)
    return errs


def test_batch_too_large(client, env):
    errs = _errors(client.post("/v1/predict", json={"records": [RECORD] * 51}, headers=H(env)))
    assert errs[0]["loc"] == ["body", "records"] and "50" in errs[0]["expected"]


def test_unknown_field(client, env):
    errs = _errors(client.post("/v1/predict", json={"record": dict(RECORD, smoker=1)},
                               headers=H(env)))
    assert errs[0]["loc"] == ["body", "record", "smoker"] and errs[0]["msg"] == "unknown field"


def test_wrong_type(client, env):
    errs = _errors(client.post("/v1/predict", json={"record": dict(RECORD, chol="high")},
                               headers=H(env)))
    assert errs[0]["loc"] == ["body", "record", "chol"] and "number" in errs[0]["expected"]
    errs = _errors(client.post("/v1/predict", json={"record": dict(RECORD, cp=7)}, headers=H(env)))
    assert errs[0]["loc"] == ["body", "record", "cp"] and "[1, 2, 3, 4]" in errs[0]["expected"]
    errs = _errors(client.post("/v1/predict", json={"record": dict(RECORD, sex=True)},
                               headers=H(env)))
    assert errs[0]["loc"] == ["body", "record", "sex"]


def test_out_of_range_does_not_echo_value(client, env, caplog):
    caplog.set_level(logging.DEBUG)
    rec = dict(RECORD, trestbps=287.625)
    r = client.post("/v1/predict", json={"records": [RECORD, rec]}, headers=H(env))
    errs = _errors(r)
    assert errs[0]["loc"] == ["body", "records", 1, "trestbps"]
    assert errs[0]["expected"] == "a number from 60 to 250 mmHg, or null"
    # the random request id is hex and may contain "287" by chance; it is not an echo
    body = r.text.replace(r.json()["request_id"], "")
    assert "287.625" not in body and "287" not in body
    assert "287.625" not in caplog.text


def test_malformed_bodies_are_422(client, env):
    for body in ("{not json", "[]", "null", '{"record": {}, "records": [{}]}', "{}",
                 '{"record": {"age": NaN}}', '{"record": {"age": 1e400}}'):
        r = client.post("/v1/predict", content=body, headers={**H(env),
                                                              "Content-Type": "application/json"})
        assert r.status_code == 422, (body, r.text)


# -- auth -------------------------------------------------------------------------------------
def test_auth(client, env):
    assert client.post("/v1/predict", json={"record": RECORD}).status_code == 401
    assert client.post("/v1/predict", json={"record": RECORD},
                       headers={"X-API-Key": "htk_clinic_forged"}).status_code == 401
    assert client.post("/v1/predict", json={"record": RECORD},
                       headers=H(env, "read")).status_code == 403
    assert client.get("/v1/drift", headers=H(env, "predict")).status_code == 403
    assert client.get("/v1/audit", headers=H(env, "predict")).status_code == 403
    assert client.get("/v1/drift", headers=H(env, "read")).status_code == 200
    assert client.get("/v1/model").status_code == 401
    assert client.get("/v1/model", headers=H(env, "read")).status_code == 200


def test_key_file_stores_hashes_only(env):
    text = env["keys_file"].read_text()
    assert all(k not in text for k in env["keys"].values())
    assert oct(env["keys_file"].stat().st_mode & 0o777) == "0o600"


# -- model, explain, drift, metrics, page ----------------------------------------------------
def test_model_endpoint(client, env):
    m = client.get("/v1/model", headers=H(env)).json()
    assert m["model_version"].startswith("pooled_lr-")
    assert "# Model card" in m["card"] and m["schema"]["features"][0]["name"] == "age"
    assert "auroc" in m["metrics"]["overall"]


def test_explain_sorted(client, env):
    r = client.post("/v1/explain", json={"record": RECORD}, headers=H(env, "predict"))
    assert r.status_code == 200
    c = r.json()["contributions"]
    assert [x["feature"] for x in c] and set(x["feature"] for x in c) == set(FEATURES)
    mags = [abs(x["contribution"]) for x in c]
    assert mags == sorted(mags, reverse=True) and mags[0] > 0
    assert r.json()["method"] == "occlusion-to-reference"
    assert client.post("/v1/explain", json={"record": dict(RECORD, age=5)},
                       headers=H(env)).status_code == 422


def test_drift_alarms_on_shifted_data(env):
    with TestClient(base_url=BASE, app=_app(env, "drift.sqlite", max_batch=200, drift_min_count=100)) as c:
        r = c.post("/v1/predict", json={"records": _rows(150, "cleveland")}, headers=H(env))
        assert r.status_code == 200
        d = c.get("/v1/drift", headers=H(env, "read")).json()
        assert d["window"] == 150 and d["alarm"] is False, d["features"][:3]
        shifted = [dict(RECORD, age=95.0, chol=650.0, thalach=70.0) for _ in range(100)]
        assert c.post("/v1/predict", json={"records": shifted}, headers=H(env)).status_code == 200
        d = c.get("/v1/drift", headers=H(env, "read")).json()
        assert d["alarm"] is True and d["status"] == "alarm"
        assert {f["name"] for f in d["features"] if f["alarm"]} >= {"age", "chol", "thalach"}
        assert "healthtransfer_drift_alarm 1" in c.get("/metrics", headers=H(env, "read")).text


def test_metrics_are_prometheus_text(client, env):
    client.post("/v1/predict", json={"record": RECORD}, headers=H(env))
    r = client.get("/metrics", headers=H(env, "read"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# TYPE healthtransfer_predictions_total counter" in r.text
    assert re.search(r'healthtransfer_http_requests_total\{method="POST",route="/v1/predict",'
                     r'status="200"\} \d+', r.text)
    for line in r.text.splitlines():  # every sample line is `name{labels} number`
        assert line.startswith("#") or re.match(r"^[a-z_]+(\{[^}]*\})? -?[0-9.e+-]+$", line), line


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_web_page_has_no_external_urls(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    texts = [r.text]
    for asset in ("/static/app.js", "/static/style.css"):
        a = client.get(asset)
        assert a.status_code == 200
        texts.append(a.text)
    for t in texts:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", t, re.I), t[:200]
    assert "/static/app.js" in r.text and "/v1/predict" in texts[1]


# -- audit ------------------------------------------------------------------------------------
def test_audit_concurrent_no_loss_and_restart(env, tmp_path):
    db = tmp_path / "audit.sqlite"
    app = _app(env, audit_url=db)
    acked = []
    lock = threading.Lock()

    with TestClient(app, base_url=BASE) as c:
        def worker(i):
            for j in range(25):
                rec = dict(RECORD, age=float(30 + (i * 25 + j) % 60))
                r = c.post("/v1/predict", json={"record": rec}, headers=H(env))
                if r.status_code == 200:
                    with lock:
                        acked.append(r.json()["request_id"])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        a = c.get("/v1/audit", params={"limit": 5}, headers=H(env, "read")).json()
    assert len(acked) == 200 and a["count"] == 200
    rec = a["records"][0]
    assert set(rec) >= {"time", "request_id", "key_id", "model_version", "input_hash", "output"}
    assert rec["key_id"] == "admin" and len(rec["input_hash"]) == 64

    # restart: the log is kept and appended to
    with TestClient(base_url=BASE, app=_app(env, audit_url=db)) as c:
        assert c.post("/v1/predict", json={"records": [RECORD] * 3}, headers=H(env)).status_code == 200
        assert c.get("/v1/audit", headers=H(env, "read")).json()["count"] == 203

    out = tmp_path / "audit.csv"
    assert audit_export(db, out) == 203
    lines = out.read_text().splitlines()
    assert lines[0] == "id,time,request_id,key_id,model_version,input_hash,output"
    assert len(lines) == 204 and set(acked) <= {l.split(",")[2] for l in lines[1:]}


def test_read_only_audit_fails_closed(env, tmp_path):
    db = tmp_path / "ro.sqlite"
    with TestClient(base_url=BASE, app=_app(env, audit_url=db)) as c:  # create the database and table
        assert c.post("/v1/predict", json={"record": RECORD}, headers=H(env)).status_code == 200
    url = f"sqlite:///file:{db}?mode=ro&uri=true"
    with TestClient(base_url=BASE, app=_app(env, audit_url=url)) as c:
        r = c.post("/v1/predict", json={"record": RECORD}, headers=H(env))
        assert r.status_code == 503 and "audit" in r.json()["detail"]
        assert "predictions" not in r.json()
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize("audit_sync, level", [(None, 1), ("normal", 1), ("full", 2),
                                               ("FULL", 2)])
def test_audit_connection_uses_the_configured_synchronous_level(env, tmp_path, audit_sync, level):
    """WAL + synchronous=NORMAL (1) by default, FULL (2) when asked; on every connection the
    service writes through, and a batch is one executemany of all its rows."""
    kw = {} if audit_sync is None else {"audit_sync": audit_sync}
    app = _app(env, audit_url=tmp_path / "sync.sqlite", **kw)
    audit = app.state.audit
    with TestClient(app, base_url=BASE) as c:
        assert c.post("/v1/predict", json={"records": [RECORD] * 4}, headers=H(env)).status_code == 200
    with audit.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == level
    assert audit.count() == 4


def test_audit_sync_is_checked(env, tmp_path):
    from healthtransfer.errors import UserInputError

    with pytest.raises(UserInputError, match="audit_sync"):
        _app(env, audit_url=tmp_path / "bad.sqlite", audit_sync="off")


def test_audit_batch_is_one_executemany(tmp_path):
    from healthtransfer.serve._audit import AuditLog, audit_url

    log = AuditLog(audit_url(tmp_path / "many.sqlite"))
    calls = []

    class Spy:  # the DBAPI connection the log writes through, recording its calls
        def __init__(self, conn):
            self.conn = conn

        def cursor(self):
            cur = self.conn.cursor()

            class Cursor:
                def executemany(self, sql, rows):
                    rows = list(rows)
                    calls.append(("executemany", sql.split()[0], len(rows)))
                    return cur.executemany(sql, rows)

                def execute(self, sql, *args):
                    calls.append(("execute", sql.split()[0]))
                    return cur.execute(sql, *args)

                def close(self):
                    cur.close()
            return Cursor()

        def commit(self):
            calls.append(("commit",))
            self.conn.commit()

        def close(self):
            self.conn.close()

    log._writer = Spy(log.engine.raw_connection())
    log.append([{"request_id": f"r{i}", "key_id": "k", "model_version": "m",
                 "input_hash": "0" * 64, "output": {"probability": 0.5}} for i in range(7)])
    assert calls == [("executemany", "INSERT", 7), ("commit",)] and log.count() == 7
    # the write connection has the pragmas too
    assert log._writer.conn.cursor().execute("PRAGMA synchronous").fetchone()[0] == 1
    log.close()


def test_wal_checkpoints_run_in_the_background(tmp_path):
    """A batch's commit does not copy the WAL into the database (SQLite's autocheckpoint at
    1,000 pages, an fsync inside some request); a thread of the log does, and stops with it."""
    import time

    from healthtransfer.serve import _audit as A

    db = tmp_path / "ck.sqlite"
    log = A.AuditLog(A.audit_url(db))
    rows = [{"request_id": f"r{i}", "key_id": "k", "model_version": "m", "input_hash": "%064x" % i,
             "output": {"probability": 0.5}} for i in range(A._CHECKPOINT_ROWS)]
    before = db.stat().st_size
    log.append(rows)
    ck = log._checkpointer
    assert ck is not None and ck._thread.is_alive()
    assert log._writer.cursor().execute("PRAGMA wal_autocheckpoint").fetchone()[0] \
        == A._WAL_BACKSTOP_PAGES
    deadline = time.monotonic() + 30  # the thread copies the rows into the database file
    while db.stat().st_size <= before:
        assert time.monotonic() < deadline, "no checkpoint within 30 s"
        ck._thread.join(0.05)
    log.close()
    assert not ck._thread.is_alive()


@pytest.mark.skipif(not os.environ.get("HEALTHTRANSFER_TEST_POSTGRES_URL"),
                    reason="set HEALTHTRANSFER_TEST_POSTGRES_URL to test the PostgreSQL audit log")
def test_postgres_audit(env):  # pragma: no cover - needs a server
    url = os.environ["HEALTHTRANSFER_TEST_POSTGRES_URL"]
    with TestClient(base_url=BASE, app=_app(env, audit_url=url)) as c:
        before = c.get("/v1/audit", headers=H(env, "read")).json()["count"]
        assert c.post("/v1/predict", json={"records": [RECORD] * 2}, headers=H(env)).status_code == 200
        assert c.get("/v1/audit", headers=H(env, "read")).json()["count"] == before + 2


# -- fuzzing against the OpenAPI document -------------------------------------------------------
def test_openapi_fuzz_no_server_errors(env, tmp_path):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    # schemathesis' ASGI client sends Host: testserver, allowed as a deployer would (--allowed-host)
    app = _app(env, audit_url=tmp_path / "fuzz.sqlite", allowed_hosts=["testserver"])
    headers = H(env)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    failures = []
    for op in schema.get_all_operations():
        operation = op.ok()

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(operation.as_strategy(), operation.as_strategy(GenerationMode.NEGATIVE)))
        def run(case):
            resp = case.call(headers=headers)
            if resp.status_code >= 500:
                failures.append((case.method, case.path, resp.status_code, resp.text[:200]))

        run()
    assert not failures, failures
