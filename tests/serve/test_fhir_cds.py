"""FHIR R4 $predict and CDS Hooks 2.0 on bundles fitted to real heart and eICU rows.

FHIR Bundles are built from real rows (``fhir_bundle_from_record``), sent through FHIR ->
code map -> model, and compared with ``/v1/predict`` on the same rows. CDS Hooks requests are
shaped like the specification's examples (hookInstance, fhirServer, fhirAuthorization,
context with userId / patientId / encounterId, prefetch keyed as in discovery).
"""

import json
import socket

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("fhir.resources")
pytest.importorskip("skops")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from healthtransfer.bundle import load_bundle  # noqa: E402
from _bundles import FEATURES, build_uci_bundle, uci_frames  # noqa: E402
from healthtransfer.serve import create_app, keys_add  # noqa: E402
from healthtransfer.serve._fhir import code_maps, fhir_bundle_from_record  # noqa: E402

EICU_FEATURES = ["age", "male", "heartrate", "meanbp", "respiratoryrate", "temperature",
                 "sodium", "creatinine", "bun", "glucose", "wbc", "gcs_total", "diabetes",
                 "cirrhosis"]
FHIR = "/fhir/RiskAssessment/$predict"


def _clean(rec: dict, bundle) -> dict:
    specs = bundle.feature_specs
    out = {}
    for k, v in rec.items():
        if v is None or v != v:
            out[k] = None
        elif specs[k]["kind"] != "numeric":
            out[k] = int(v)
        else:
            out[k] = float(v)
    return out


def _eicu_bundle(path):
    from healthtransfer.bundle._write import write_bundle
    from healthtransfer.data import load_dataset
    from healthtransfer.data.preprocess import make_preprocessor
    from healthtransfer.methods import baselines_registry

    ds = load_dataset("eicu_demo").with_features(EICU_FEATURES)
    f = ds.frame
    train = f[f[ds.domain] != "West"]
    cat = [c for c in EICU_FEATURES if ds.schema.feature(c).kind != "numeric"]
    pre = make_preprocessor([c for c in EICU_FEATURES if c not in cat], cat).fit(
        train[EICU_FEATURES])
    spec = next(m for m in baselines_registry.METHODS if m.name == "source_lr")
    model = spec.factory(random_state=0).fit(pre.transform(train[EICU_FEATURES]),
                                             train[ds.label].to_numpy(),
                                             sample_domain=np.ones(len(train), int))
    return write_bundle(path, model=model, preprocessor=pre, dataset=ds, training_frame=train,
                        method="source_lr", metrics={},
                        extra={"sources": ["Midwest", "South", "Northeast"], "target": "West"}), f


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("fhir")
    keys = d / "keys.json"
    k = {"predict": keys_add(keys, "clinic", ["predict"]), "read": keys_add(keys, "ops", ["read"])}
    heart = build_uci_bundle(d / "heart", "pooled_lr")
    eicu, eicu_frame = _eicu_bundle(d / "eicu")
    out = {"dir": d, "keys": k, "keys_file": keys}
    for name, path in (("heart", heart), ("eicu", eicu)):
        app = create_app(path, api_keys_file=keys, audit_url=d / f"audit-{name}.sqlite",
                         allow_unsigned=True)  # built here, in the test: origin known
        out[name] = {"bundle": load_bundle(path), "client": TestClient(app, base_url="http://localhost"), "app": app}
    _, train, test = uci_frames()
    hb = out["heart"]["bundle"]
    heart_rows = [_clean(r, hb) for r in test[FEATURES].to_dict("records")]
    out["heart"]["rows"] = [r for r in heart_rows
                            if all(r[c] is not None for c in ("age", "sex", "trestbps", "chol"))]
    eb = out["eicu"]["bundle"]
    west = eicu_frame[eicu_frame["domain"] == "West"][EICU_FEATURES]
    rows = [_clean(r, eb) for r in west.to_dict("records")]
    out["eicu"]["rows"] = [r for r in rows if all(r[c] is not None
                                                  for c in ("age", "heartrate", "meanbp"))]
    yield out
    for name in ("heart", "eicu"):
        out[name]["client"].close()


def H(env, which="predict", fhir=True):
    h = {"X-API-Key": env["keys"][which]}
    if fhir:
        h["Content-Type"] = "application/fhir+json"
    return h


def _audit_count(env, name):
    return env[name]["app"].state.audit.count()


# -- FHIR $predict ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["heart", "eicu"])
def test_fhir_equals_v1_predict_on_real_rows(env, name):
    e = env[name]
    rows = e["rows"][:25]
    assert len(rows) >= 20
    want = e["client"].post("/v1/predict", json={"records": rows}, headers=H(env, fhir=False))
    assert want.status_code == 200, want.text
    want = [p["probability"] for p in want.json()["predictions"]]
    from fhir.resources.R4B.riskassessment import RiskAssessment

    for i, (row, w) in enumerate(zip(rows, want)):
        fb = fhir_bundle_from_record(row, e["bundle"], patient_id=f"pt{i}")
        r = e["client"].post(FHIR, content=json.dumps(fb), headers=H(env))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+json")
        ra = RiskAssessment.model_validate(r.json())  # valid FHIR R4(B)
        assert abs(float(ra.prediction[0].probabilityDecimal) - w) <= 1e-9
        assert ra.subject.reference == f"Patient/pt{i}"
        assert e["bundle"].model_version in ra.method.text
        assert ra.method.coding[0].code == e["bundle"].model_version
        assert "Top contributions" in ra.note[0].text


def test_fhir_missing_required_observation_names_the_code(env):
    e = env["heart"]
    fb = fhir_bundle_from_record(e["rows"][0], e["bundle"])
    fb["entry"] = [x for x in fb["entry"] if "2093-3" not in json.dumps(x)]
    before = _audit_count(env, "heart")
    r = e["client"].post(FHIR, content=json.dumps(fb), headers=H(env))
    assert r.status_code == 422
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    oo = OperationOutcome.model_validate(r.json())
    assert oo.issue[0].code == "required"
    assert "http://loinc.org|2093-3" in oo.issue[0].diagnostics
    assert "chol" in oo.issue[0].diagnostics
    assert _audit_count(env, "heart") == before  # no risk, no audit row


def test_fhir_ucum_conversion(env):
    e = env["heart"]
    row = dict(e["rows"][0])
    fb = fhir_bundle_from_record(row, e["bundle"])
    for x in fb["entry"]:
        res = x["resource"]
        if "2093-3" in json.dumps(res.get("code", {})):
            res["valueQuantity"] = {"value": row["chol"] / 38.67, "unit": "mmol/L",
                                    "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    got = e["client"].post(FHIR, content=json.dumps(fb), headers=H(env)).json()
    want = e["client"].post("/v1/predict", json={"record": row}, headers=H(env, fhir=False)).json()
    assert abs(got["prediction"][0]["probabilityDecimal"]
               - want["predictions"][0]["probability"]) < 1e-9


def test_fhir_unknown_unit_and_invalid_fhir_are_operation_outcomes(env):
    e = env["heart"]
    fb = fhir_bundle_from_record(e["rows"][0], e["bundle"])
    for x in fb["entry"]:
        if "8480-6" in json.dumps(x["resource"].get("code", {})):
            x["resource"]["valueQuantity"].update(unit="[psi]", code="[psi]")
    r = e["client"].post(FHIR, content=json.dumps(fb), headers=H(env))
    assert r.status_code == 422 and "8480-6" in r.text and "[psi]" in r.text
    fb = fhir_bundle_from_record(e["rows"][0], e["bundle"])
    fb["entry"][1]["resource"]["valueQuantity"] = {"value": "SECRET-VALUE-123"}
    r = e["client"].post(FHIR, content=json.dumps(fb), headers=H(env))
    assert r.status_code == 422 and r.json()["resourceType"] == "OperationOutcome"
    assert "SECRET-VALUE-123" not in r.text  # issues never echo values
    r = e["client"].post(FHIR, content=b"{not json", headers=H(env))
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


def test_fhir_value_outside_schema_range_is_refused_without_echo(env):
    e = env["heart"]
    row = dict(e["rows"][0], chol=699.0)
    fb = fhir_bundle_from_record(row, e["bundle"])
    for x in fb["entry"]:
        if "2093-3" in json.dumps(x["resource"].get("code", {})):
            x["resource"]["valueQuantity"]["value"] = 1234.5
    r = e["client"].post(FHIR, content=json.dumps(fb), headers=H(env))
    assert r.status_code == 422 and "2093-3" in r.text and "1234.5" not in r.text


def test_fhir_and_cds_need_the_predict_scope(env):
    e = env["heart"]
    fb = json.dumps(fhir_bundle_from_record(e["rows"][0], e["bundle"]))
    assert e["client"].post(FHIR, content=fb).status_code == 401
    assert e["client"].post(FHIR, content=fb, headers=H(env, "read")).status_code == 403
    req = _cds_request(e, e["rows"][0])
    assert e["client"].post("/cds-services/healthtransfer-risk", json=req).status_code == 401
    assert e["client"].post("/cds-services/healthtransfer-risk", json=req,
                            headers=H(env, "read", fhir=False)).status_code == 403


def test_fhir_every_risk_is_audited(env):
    e = env["eicu"]
    before = _audit_count(env, "eicu")
    fb = fhir_bundle_from_record(e["rows"][0], e["bundle"])
    r = e["client"].post(FHIR, content=json.dumps(fb), headers=H(env))
    assert r.status_code == 200
    rows = e["app"].state.audit.recent(1)
    assert _audit_count(env, "eicu") == before + 1
    assert rows[0]["request_id"] == r.json()["identifier"][0]["value"]
    assert abs(rows[0]["output"]["probability"] - r.json()["prediction"][0]["probabilityDecimal"]) < 1e-12


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(
                        st.sampled_from(["resourceType", "entry", "resource", "code", "coding",
                                         "system", "valueQuantity", "value", "unit", "gender",
                                         "birthDate", "status", "type", "x"]), c, max_size=5),
                    max_leaves=25),
       st.sampled_from(["Bundle", "Observation", "Patient", "Nonsense"]))
def test_fhir_arbitrary_input_never_500(env, body, rtype):
    """Whatever arrives, the answer is a FHIR resource or an OperationOutcome, never a 500."""
    if isinstance(body, dict) and rtype != "Nonsense":
        body = dict(body, resourceType=rtype)
    r = env["heart"]["client"].post(FHIR, content=json.dumps(body), headers=H(env))
    assert r.status_code in (200, 400, 422), r.text
    assert r.json()["resourceType"] in ("RiskAssessment", "OperationOutcome")


# -- CDS Hooks ---------------------------------------------------------------------------------
def _cds_request(e, row, hook="patient-view", drop=()):
    """A request shaped like the CDS Hooks 2.0 specification's example, prefetch from discovery."""
    fb = fhir_bundle_from_record(row, e["bundle"], patient_id="1288992")
    maps = code_maps(e["bundle"])
    by_code = {}
    for x in fb["entry"]:
        res = x["resource"]
        for c in res.get("code", {}).get("coding", []):
            by_code[(c["system"], c["code"])] = res
    prefetch = {"patient": fb["entry"][0]["resource"]}
    conds = []
    for name, m in maps.items():
        if m.resource == "Observation":
            res = by_code.get((m.system, m.code))
            prefetch[name] = None if res is None else {
                "resourceType": "Bundle", "type": "searchset", "total": 1,
                "entry": [{"resource": res}]}
        elif m.resource == "Condition" and (m.system, m.code) in by_code:
            conds.append({"resource": by_code[(m.system, m.code)]})
    if any(m.resource == "Condition" for m in maps.values()):
        prefetch["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": conds}
    for k in drop:
        prefetch.pop(k, None)
    context = {"userId": "Practitioner/example", "patientId": "1288992", "encounterId": "89284"}
    if hook == "order-select":
        context.update(selections=["MedicationRequest/smart-MedicationRequest-103"],
                       draftOrders={"resourceType": "Bundle", "type": "collection", "entry": [{
                           "resource": {"resourceType": "MedicationRequest",
                                        "id": "smart-MedicationRequest-103", "status": "draft",
                                        "intent": "order",
                                        "medicationCodeableConcept": {"text": "Amoxicillin"},
                                        "subject": {"reference": "Patient/1288992"}}}]})
    return {"hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "fhirServer": "http://hooks.smarthealthit.org:9080", "hook": hook,
            "fhirAuthorization": {"access_token": "some-opaque-fhir-access-token",
                                  "token_type": "Bearer", "expires_in": 300,
                                  "scope": "patient/Patient.read patient/Observation.read",
                                  "subject": "cds-service4"},
            "context": context, "prefetch": prefetch}


@pytest.fixture
def no_network(monkeypatch):
    """Any outbound connection (e.g. to the request's fhirServer) fails the test."""
    def refuse(*a, **k):
        raise AssertionError("the CDS service tried to open a network connection")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_cds_discovery_lists_prefetch_for_every_coded_feature(env):
    d = env["eicu"]["client"].get("/cds-services").json()
    hooks = {s["id"]: s["hook"] for s in d["services"]}
    assert hooks == {"healthtransfer-risk": "patient-view",
                     "healthtransfer-risk-order-select": "order-select"}
    pre = d["services"][0]["prefetch"]
    assert pre["patient"] == "Patient/{{context.patientId}}"
    assert "code=http://loinc.org|8867-4" in pre["heartrate"]
    assert "http://snomed.info/sct|73211009" in pre["conditions"]
    maps = code_maps(env["eicu"]["bundle"])
    assert {k for k, m in maps.items() if m.resource == "Observation"} <= set(pre)


@pytest.mark.parametrize("name,hook", [("heart", "patient-view"), ("eicu", "patient-view"),
                                       ("eicu", "order-select")])
def test_cds_card_from_prefetch_equals_v1_predict(env, name, hook, no_network, caplog):
    e = env[name]
    sid = "healthtransfer-risk" if hook == "patient-view" else "healthtransfer-risk-order-select"
    for row in e["rows"][:5]:
        before = _audit_count(env, name)
        r = e["client"].post(f"/cds-services/{sid}", json=_cds_request(e, row, hook),
                             headers=H(env, fhir=False))
        assert r.status_code == 200, r.text
        cards = r.json()["cards"]
        main = cards[0]
        assert main["indicator"] in ("info", "warning") and len(main["summary"]) < 140
        assert main["source"]["label"].endswith(e["bundle"].model_version)
        assert main["links"][0]["type"] == "absolute" and "request_id=" in main["links"][0]["url"]
        assert "Main contributors" in main["detail"]
        assert _audit_count(env, name) == before + 1  # the card's risk is audited
        want = e["client"].post("/v1/predict", json={"record": row},
                                headers=H(env, fhir=False)).json()["predictions"][0]
        assert f"{100 * want['probability']:.1f}%" in main["detail"]
        audited = e["app"].state.audit.recent(2)[1]["output"]["probability"]
        assert abs(audited - want["probability"]) <= 1e-9
    assert "some-opaque-fhir-access-token" not in caplog.text


def test_cds_missing_prefetch_gives_a_card_naming_it(env, no_network):
    e = env["heart"]
    before = _audit_count(env, "heart")
    r = e["client"].post("/cds-services/healthtransfer-risk",
                         json=_cds_request(e, e["rows"][0], drop=("chol",)),
                         headers=H(env, fhir=False))
    assert r.status_code == 200
    cards = r.json()["cards"]
    assert len(cards) == 1 and cards[0]["summary"].startswith("Risk not computed")
    assert "http://loinc.org|2093-3" in cards[0]["detail"]
    assert "prefetch 'chol' was not sent" in cards[0]["detail"]
    assert _audit_count(env, "heart") == before


def test_cds_warning_card_outside_training_range(env, no_network):
    e = env["heart"]
    row = dict(e["rows"][0], age=99.0)  # allowed by the schema, above every training age
    r = e["client"].post("/cds-services/healthtransfer-risk", json=_cds_request(e, row),
                         headers=H(env, fhir=False))
    cards = r.json()["cards"]
    assert cards[0]["indicator"] == "warning"
    assert len(cards) == 2 and "outside training range: age" in cards[1]["summary"]


def test_cds_bad_requests(env):
    c = env["heart"]["client"]
    h = H(env, fhir=False)
    assert c.post("/cds-services/nope", json={}, headers=h).status_code == 404
    req = _cds_request(env["heart"], env["heart"]["rows"][0], hook="order-select")
    assert c.post("/cds-services/healthtransfer-risk", json=req, headers=h).status_code == 400
    assert c.post("/cds-services/healthtransfer-risk", content=b"[1,2", headers=h).status_code == 400
    assert c.post("/cds-services/healthtransfer-risk", json={"hook": "patient-view"},
                  headers=h).status_code == 400


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(
                         st.sampled_from(["resourceType", "entry", "resource", "patient", "chol",
                                          "conditions", "gender", "code", "coding", "x"]),
                         c, max_size=4), max_leaves=20)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefetch=st.one_of(st.none(), _json), context=st.one_of(_json, st.just({"patientId": "1"})),
       hook=st.sampled_from(["patient-view", "order-select", "x"]))
def test_cds_arbitrary_requests_never_500(env, prefetch, context, hook):
    """Arbitrary CDS Hooks bodies get cards or a 400 with a message, never a 500."""
    body = {"hook": hook, "hookInstance": "h", "context": context, "prefetch": prefetch}
    r = env["heart"]["client"].post("/cds-services/healthtransfer-risk", json=body,
                                    headers=H(env, fhir=False))
    assert r.status_code in (200, 400), r.text
    assert ("cards" in r.json()) if r.status_code == 200 else r.json()["detail"]


# -- survival bundles: a risk per horizon (issue 18 with issue 17's outcome bundles) -------------
@pytest.fixture(scope="module")
def surv(tmp_path_factory):
    """A Cox model of in-hospital death (eICU Midwest -> South) and a length-of-stay regression,
    written by real studies on the eICU demo rows and served."""
    from healthtransfer.bundle._outcome import load_outcome_bundle
    from healthtransfer.data import load_dataset
    from healthtransfer.reports.outcome_report import write_outcome_outputs
    from healthtransfer.study.config import load_study
    from healthtransfer.study.run import run_study

    d = tmp_path_factory.mktemp("surv")
    keys = d / "keys.json"
    key = keys_add(keys, "clinic", ["predict"])
    feats = json.dumps(EICU_FEATURES)
    out = {"key": key}
    for kind, data, methods in (
            ("survival", 'time = "hospital_days"\nevent = "death"\nhorizons = [7, 14]', '["source_cox"]'),
            ("regression", 'label = "hospital_days"\ntask = "regression"', '["source_ridge"]')):
        (d / f"{kind}.toml").write_text(
            f'[study]\nname = "{kind}"\n\n[data]\ndataset = "eicu_demo"\noptions = {{ domain_by = "region" }}\n'
            f'{data}\nfeatures = {feats}\n\n[transfer]\nsources = ["Midwest"]\ntarget = "South"\n'
            f'labeled_target = [0]\nseeds = 1\nmethods = {methods}\n')
        write_outcome_outputs(run_study(load_study(d / f"{kind}.toml"), progress=False), d / kind)
        path = d / kind / "bundle" / "South"
        app = create_app(path, api_keys_file=keys, audit_url=d / f"audit-{kind}.sqlite", allow_unsigned=True)
        out[kind] = {"bundle": load_outcome_bundle(path, allow_unsigned=True), "app": app,
                     "client": TestClient(app, base_url="http://localhost")}
    ds = load_dataset("eicu_demo", domain_by="region")
    south = ds.frame[ds.frame[ds.domain] == "South"][EICU_FEATURES]
    b = out["survival"]["bundle"]
    rows = [_clean(r, b) for r in south.to_dict("records")]
    out["survival"]["rows"] = [r for r in rows if all(r[c] is not None for c in ("age", "heartrate", "meanbp"))]
    yield out
    for kind in ("survival", "regression"):
        out[kind]["client"].close()


def test_fhir_survival_gives_a_risk_per_horizon_equal_to_v1_predict(surv):
    from fhir.resources.R4B.riskassessment import RiskAssessment

    e, h = surv["survival"], {"X-API-Key": surv["key"]}
    rows = e["rows"][:10]
    want = e["client"].post("/v1/predict", json={"records": rows}, headers=h).json()["predictions"]
    assert e["bundle"].schema["label"] == "death"
    for i, (row, w) in enumerate(zip(rows, want)):
        fb = fhir_bundle_from_record(row, e["bundle"], patient_id=f"pt{i}")
        r = e["client"].post(FHIR, content=json.dumps(fb), headers={**h, "Content-Type": "application/fhir+json"})
        assert r.status_code == 200, r.text
        ra = RiskAssessment.model_validate(r.json())
        got = {float(p.whenRange.high.value): float(p.probabilityDecimal) for p in ra.prediction}
        assert sorted(got) == [7.0, 14.0]
        assert all(p.whenRange.high.code == "d" and p.whenRange.high.system == "http://unitsofmeasure.org"
                   for p in ra.prediction)
        assert ra.prediction[0].outcome.text == "death within 7 days"
        assert all(float(p.whenRange.low.value) == 0 for p in ra.prediction)
        for hz, risk in w["risk"].items():
            assert abs(got[float(hz)] - risk) <= 1e-9
        assert got[7.0] <= got[14.0]
        assert "log relative hazard" in ra.note[0].text


def test_explain_survival_is_on_the_risk_score(surv):
    e = surv["survival"]
    row = e["rows"][0]
    r = e["client"].post("/v1/explain", json={"record": row}, headers={"X-API-Key": surv["key"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["scale"].startswith("log relative hazard") and len(out["contributions"]) == len(EICU_FEATURES)
    b = e["bundle"]
    top = out["contributions"][0]
    ref = dict(row, **{top["feature"]: top["reference"]})
    z = b.risk_score([row, ref])
    assert abs(out["risk_score"] - z[0]) <= 1e-9 and abs(top["contribution"] - (z[0] - z[1])) <= 1e-9


def test_cds_survival_card_names_every_horizon(surv, no_network):
    e = surv["survival"]
    for row in e["rows"][:3]:
        before = e["app"].state.audit.count()
        r = e["client"].post("/cds-services/healthtransfer-risk", json=_cds_request(e, row),
                             headers={"X-API-Key": surv["key"]})
        assert r.status_code == 200, r.text
        main = r.json()["cards"][0]
        want = e["client"].post("/v1/predict", json={"record": row},
                                headers={"X-API-Key": surv["key"]}).json()["predictions"][0]["risk"]
        assert "within 7 days" in main["summary"] and "within 14 days" in main["summary"]
        for hz, risk in want.items():
            assert f"within {hz} days**: {100 * risk:.1f}%" in main["detail"]
        contributors = main["detail"].split("**Main contributors**")[1].split("\n\n")[0].splitlines()[1:]
        assert len(contributors) == 3 and all(c.endswith("log relative hazard)") for c in contributors)
        assert e["app"].state.audit.count() == before + 2  # the card's risk and the check above
    d = e["client"].get("/cds-services", headers={"X-API-Key": surv["key"]}).json()
    assert "death within 7, 14 days" in d["services"][0]["title"]


def test_regression_bundles_have_no_risk_endpoints(surv):
    e = surv["regression"]
    h = {"X-API-Key": surv["key"]}
    assert e["client"].post(FHIR, content=b"{}", headers=h).status_code == 404
    assert e["client"].get("/cds-services", headers=h).status_code == 404
    r = e["client"].post("/v1/explain", json={"record": surv["survival"]["rows"][0]}, headers=h)
    assert r.status_code == 200 and r.json()["scale"] == "the prediction on its fitted scale"


def test_horizon_keys_are_exact():
    from healthtransfer.bundle._outcome import horizon_key

    assert horizon_key(7.0) == "7" and horizon_key(0.5) == "0.5"
    assert horizon_key(1234567.0) != horizon_key(1234568.0)
    for h in (1234567.0, 1e-7, 365.25, 1826.0):
        assert float(horizon_key(h)) == h
