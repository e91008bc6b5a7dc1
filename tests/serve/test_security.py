"""Issue 15: the service is closed by default, audits every risk it returns, bounds bodies
while they stream, keys its audit hashes, publishes no patient value and logs none."""

import hashlib
import hmac
import json
import logging
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("skops")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

from _bundles import build_uci_bundle, uci_frames  # noqa: E402
from healthtransfer.errors import UserInputError  # noqa: E402
from healthtransfer.serve import create_app, keys_add  # noqa: E402

RECORD = {"age": 58.0, "sex": 1, "cp": 4, "trestbps": 140.0, "chol": 240.0, "fbs": 0,
          "restecg": 0, "thalach": 140.0, "exang": 1, "oldpeak": 1.5}
BASE = "http://localhost"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("sec")
    bundle = build_uci_bundle(d / "bundle", "pooled_lr")
    keys = d / "keys.json"
    k = {"predict": keys_add(keys, "clinic", ["predict"]), "read": keys_add(keys, "ops", ["read"])}
    return {"dir": d, "bundle": bundle, "keys_file": keys, "keys": k}


def make(env, tmp_path, **kw):
    kw.setdefault("api_keys_file", env["keys_file"])
    kw.setdefault("allow_unsigned", True)
    kw.setdefault("max_batch", 5)
    kw.setdefault("audit_url", tmp_path / "audit.sqlite")
    return create_app(env["bundle"], audit_secret=tmp_path / "audit.secret", **kw)


def H(env, which="predict"):
    return {"X-API-Key": env["keys"][which]}


# -- defect 5: closed by default -------------------------------------------------------------
def test_no_keys_refuses_to_start(env, tmp_path):
    with pytest.raises(UserInputError, match="without API keys"):
        make(env, tmp_path, api_keys_file=None)


def test_no_auth_is_predict_only_and_loopback_only(env, tmp_path):
    app = make(env, tmp_path, api_keys_file=None, no_auth=True)
    with TestClient(app, base_url=BASE, client=("127.0.0.1", 50000)) as c:
        assert c.post("/v1/predict", json={"record": RECORD}).status_code == 200
        assert c.get("/v1/audit").status_code == 403
        assert c.get("/v1/drift").status_code == 403
        assert c.get("/metrics").status_code == 403
        assert c.get("/openapi.json").status_code == 403
        page = c.get("/").text
        assert "WITHOUT authentication" in page
        assert c.get("/v1/model").json()["auth"].startswith("none")
    with TestClient(app, base_url=BASE, client=("10.1.2.3", 50000)) as c:
        assert c.post("/v1/predict", json={"record": RECORD}).status_code == 403


def test_no_auth_refuses_a_public_interface(env):
    pytest.importorskip("uvicorn")
    from healthtransfer.serve import serve

    with pytest.raises(UserInputError, match="without authentication"):
        serve(env["bundle"], host="0.0.0.0", no_auth=True, allow_unsigned=True)


def test_unsigned_bundle_needs_an_explicit_choice(env, tmp_path):
    with pytest.raises(UserInputError, match="origin is not checked"):
        make(env, tmp_path, allow_unsigned=False)


@pytest.mark.parametrize("path", ["/metrics", "/docs", "/openapi.json", "/v1/audit", "/v1/drift"])
def test_operational_endpoints_need_a_read_key(env, tmp_path, path):
    with TestClient(make(env, tmp_path), base_url=BASE) as c:
        assert c.get(path).status_code == 401
        assert c.get(path, headers=H(env, "predict")).status_code == 403
        assert c.get(path, headers=H(env, "read")).status_code == 200


def test_host_allow_list_blocks_dns_rebinding(env, tmp_path):
    with TestClient(make(env, tmp_path), base_url="http://attacker.example") as c:
        assert c.post("/v1/predict", json={"record": RECORD}, headers=H(env)).status_code == 400
    with TestClient(make(env, tmp_path, allowed_hosts=["risk.hospital.example"]),
                    base_url="http://risk.hospital.example") as c:
        assert c.post("/v1/predict", json={"record": RECORD}, headers=H(env)).status_code == 200


# -- defect 3: explain is audited and fails closed -----------------------------------------------
def test_explain_is_audited_and_monitored(env, tmp_path):
    app = make(env, tmp_path)
    with TestClient(app, base_url=BASE) as c:
        r = c.post("/v1/explain", json={"record": RECORD}, headers=H(env))
        assert r.status_code == 200
        a = c.get("/v1/audit", headers=H(env, "read")).json()
        assert a["count"] == 1 and a["records"][0]["request_id"] == r.json()["request_id"]
        assert a["records"][0]["output"]["endpoint"] == "explain"
        assert c.get("/v1/drift", headers=H(env, "read")).json()["window"] == 1


def test_explain_fails_closed(env, tmp_path):
    db = tmp_path / "ro.sqlite"
    with TestClient(make(env, tmp_path, audit_url=db), base_url=BASE) as c:
        assert c.post("/v1/predict", json={"record": RECORD}, headers=H(env)).status_code == 200
    url = f"sqlite:///file:{db}?mode=ro&uri=true"
    app = create_app(env["bundle"], api_keys_file=env["keys_file"], allow_unsigned=True,
                     audit_url=url, audit_secret=tmp_path / "audit.secret")
    with TestClient(app, base_url=BASE) as c:
        r = c.post("/v1/explain", json={"record": RECORD}, headers=H(env))
        assert r.status_code == 503 and "contributions" not in r.json()


# -- defect 4: body limits while streaming, batch bound before prediction ---------------------
def _count_predictions(app):
    calls = []
    # every risk goes through the service's predictor (compiled array path or the full one)
    real = app.state.predictor.predict_proba
    app.state.predictor.predict_proba = lambda recs: calls.append(1) or real(recs)
    return calls


def test_chunked_body_over_the_limit_is_refused_while_streaming(env, tmp_path):
    app = make(env, tmp_path)  # max_batch 5: limit 64 KiB + 20 KiB
    calls = _count_predictions(app)
    sent = []

    def body():  # no Content-Length: httpx sends it chunked
        for _ in range(1000):
            sent.append(1)
            yield b" " * 4096
    with TestClient(app, base_url=BASE) as c:
        r = c.post("/v1/predict", content=body(), headers={**H(env),
                                                           "Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert not calls  # nothing parsed or predicted (that reading stops at the limit: below)


def test_declared_length_over_the_limit_is_refused(env, tmp_path):
    with TestClient(make(env, tmp_path), base_url=BASE) as c:
        r = c.post("/v1/predict", content=b"{" + b" " * 200_000 + b"}",
                   headers={**H(env), "Content-Type": "application/json"})
        assert r.status_code == 413


def test_batch_over_max_batch_is_rejected_before_prediction(env, tmp_path):
    app = make(env, tmp_path)
    calls = _count_predictions(app)
    with TestClient(app, base_url=BASE) as c:
        r = c.post("/v1/predict", json={"records": [RECORD] * 6}, headers=H(env))
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "records"]
        assert not calls
        assert c.post("/v1/predict", json={"records": [RECORD] * 5},
                      headers=H(env)).status_code == 200 and calls


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=6),
       limit=st.integers(0, 300))
def test_body_limit_property(body, cuts, limit):
    """Whatever the chunking, the app sees exactly the body when it fits, and never runs
    when it does not."""
    import asyncio

    from healthtransfer.serve._limits import BodyLimit

    seen = []

    async def app(scope, receive, send):
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    pts = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    msgs = [{"type": "http.request", "body": body[a:b], "more_body": True}
            for a, b in zip(pts[:-1], pts[1:])] or [{"type": "http.request", "body": b""}]
    msgs[-1]["more_body"] = False
    it = iter(msgs)
    out, taken = [], []

    async def receive():
        taken.append(1)
        return next(it)

    async def send(m):
        out.append(m)

    asyncio.run(BodyLimit(app, limit)({"type": "http", "method": "POST", "headers": []},
                                      receive, send))
    if len(body) > limit:
        assert out[0]["status"] == 413 and not seen
        # reading stopped at the first chunk that crossed the limit
        crossed = next(i for i, (a, b) in enumerate(zip(pts[:-1], pts[1:])) if b > limit)
        assert len(taken) == crossed + 1
    else:
        assert out[0]["status"] == 200 and seen == [body]


# -- defect 6: keyed audit hashes ------------------------------------------------------------
def test_audit_hash_is_keyed_with_a_secret_outside_the_database(env, tmp_path):
    with TestClient(make(env, tmp_path), base_url=BASE) as c:
        c.post("/v1/predict", json={"record": RECORD}, headers=H(env))
        stored = c.get("/v1/audit", headers=H(env, "read")).json()["records"][0]["input_hash"]
    canon = json.dumps(RECORD, sort_keys=True, separators=(",", ":"), default=str).encode()
    assert stored != hashlib.sha256(canon).hexdigest()  # a guess can no longer be confirmed
    secret_file = tmp_path / "audit.secret"
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    key = bytes.fromhex(secret_file.read_text().strip())
    assert stored == hmac.new(key, canon, hashlib.sha256).hexdigest()
    assert secret_file.read_text().strip() not in (tmp_path / "audit.sqlite").read_bytes().decode(
        "latin-1")


# -- defect 7: no patient value published --------------------------------------------------------
def test_published_ranges_are_clipped_quantiles(env, tmp_path):
    import numpy as np

    _, train, _ = uci_frames()
    ref = json.loads((env["bundle"] / "reference.json").read_text())
    with TestClient(make(env, tmp_path), base_url=BASE) as c:
        ranges = c.get("/v1/model", headers=H(env)).json()["training_ranges"]
    texts = "".join((env["bundle"] / n).read_text() for n in
                    ("reference.json", "model_card.md", "training.json", "metrics.json"))
    assert '"min"' not in texts and '"max"' not in texts
    for name, (lo, hi) in ranges.items():
        x = train[name].dropna().to_numpy(float)
        if lo is not None:
            assert (x < lo).sum() >= 10, name
        if hi is not None:
            assert (x > hi).sum() >= 10, name
        r = ref["features"][name]
        published = [r[k] for k in ("clip_low", "clip_high", "median") if r[k] is not None]
        published += r["edges"]
        for v in published:
            assert (x < v).sum() >= 10 and (x > v).sum() >= 10, name
        assert x.min() not in published and x.max() not in published


# -- defect 9: nothing of a request reaches the server log ------------------------------------
def test_server_error_keeps_values_out_of_every_log_line(env, tmp_path, capfd, caplog):
    pytest.importorskip("uvicorn")
    from healthtransfer.serve import make_server

    secret_value = 271.828182
    app = make(env, tmp_path)

    def boom(records):  # a library error quoting its input, as many do
        raise ValueError(f"cannot use chol={records[0]['chol']!r}")
    app.state.predictor.predict_proba = boom
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    caplog.set_level(logging.DEBUG)
    srv = make_server(app, "127.0.0.1", port, log_level="debug")
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.started:
            assert time.monotonic() < deadline and t.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/predict", headers=H(env),
                       json={"record": dict(RECORD, chol=secret_value)})
        assert r.status_code == 500 and str(secret_value) not in r.text
    finally:
        srv.should_exit = True
        t.join(15)
    out, err = capfd.readouterr()
    lines = (out + err).splitlines() + [rec.getMessage() for rec in caplog.records] + [
        caplog.text]
    assert any("ValueError" in line for line in lines)  # the error is logged, by type
    hits = [line for line in lines if "271.82" in line]
    assert not hits, hits[:3]
