"""The service's web page in a real browser (headless Chromium against a live uvicorn).

A user opens ``/``, is asked for an API key, gets a form generated from the bundle's schema,
sees a range warning while typing an out-of-range value, submits a valid record and reads the
risk and the contribution bar chart. Compared with the API's own answer. With
``HEALTHTRANSFER_SCREENSHOTS=docs/`` the final page is saved as ``docs/service.png``.

Needs chromium + chromedriver (Debian) and selenium (pip); skipped with the reason otherwise.
"""

import re
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("skops")

import httpx  # noqa: E402

from _bundles import build_uci_bundle  # noqa: E402
from healthtransfer.serve import create_app, keys_add  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reports"))
from test_report_browser import chromium_driver, full_page_png, save_screenshot  # noqa: E402

sys.path.pop(0)

RECORD = {"age": 58.0, "sex": 1, "cp": 4, "trestbps": 140.0, "chol": 240.0, "fbs": 0,
          "restecg": 0, "thalach": 140.0, "exang": 1, "oldpeak": 1.5}
TIMEOUT = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    d = tmp_path_factory.mktemp("page")
    bundle = build_uci_bundle(d / "bundle", "pooled_lr")
    keys = d / "keys.json"
    key = keys_add(keys, "clinic", ["predict", "read"])
    app = create_app(bundle, api_keys_file=keys, audit_url=d / "audit.sqlite",
                     allow_unsigned=True)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        access_log=False))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + TIMEOUT
    while not srv.started:
        assert time.monotonic() < deadline and t.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "key": key}
    finally:
        srv.should_exit = True
        t.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium_driver(tmp_path_factory.mktemp("chrome") / "profile")
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, cond, what):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, TIMEOUT).until(cond, message=f"timed out waiting for {what}")


def _type(el, text):
    el.clear()
    el.send_keys(text)


def test_page_end_to_end(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(server["url"] + "/")
    msg = _wait(d, lambda d: d.find_element(By.ID, "auth-msg").text, "the page to ask for a key")
    # the page asks for a key (the service has a key file) before it shows a form
    assert "API key" in msg, msg
    assert not d.find_elements(By.CSS_SELECTOR, "#fields input, #fields select")
    assert d.find_element(By.ID, "predict-btn").get_attribute("disabled") is not None
    _type(d.find_element(By.ID, "api-key"), server["key"])
    d.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    _wait(d, lambda d: d.find_element(By.ID, "predict-btn").is_enabled(), "the form")
    assert d.find_element(By.ID, "auth-msg").text == "Key accepted."
    assert server["key"] not in d.page_source  # the key is not echoed into the page

    # the form follows the schema: one control per feature, of the right kind
    model = httpx.get(server["url"] + "/v1/model", headers={"X-API-Key": server["key"]}).json()
    for f in model["schema"]["features"]:
        el = d.find_element(By.ID, "f-" + f["name"])
        if f["kind"] == "numeric":
            assert el.tag_name == "input" and el.get_attribute("type") == "number", f["name"]
            assert float(el.get_attribute("min")) == f["range"][0]
            assert float(el.get_attribute("max")) == f["range"][1]
        else:
            assert el.tag_name == "select", f["name"]
            opts = [o.text for o in Select(el).options]
            assert opts == ["not measured"] + [str(c) for c in f["categories"]], (f["name"], opts)
    assert model["model_version"] in d.find_element(By.ID, "model-line").text

    # a range warning appears as the user types, and clears when the value is fixed
    bp, bp_msg = d.find_element(By.ID, "f-trestbps"), d.find_element(By.ID, "f-trestbps-msg")
    _type(bp, "300")
    assert "outside the allowed range 60 to 250" in bp_msg.text, bp_msg.text
    assert "bad" in bp.get_attribute("class")
    _type(bp, "30")  # typing "3" then "30": still out of range below
    assert "outside the allowed range" in bp_msg.text
    age, age_msg = d.find_element(By.ID, "f-age"), d.find_element(By.ID, "f-age-msg")
    lo, hi = model["training_ranges"]["age"]
    _type(age, str(hi + 5))  # allowed, but never seen in training: a softer warning
    assert "outside the range seen in training" in age_msg.text, age_msg.text
    assert "warn" in age.get_attribute("class")
    # text that is not a number (a number input then reports value "") is not sent as "missing"
    chol, chol_msg = d.find_element(By.ID, "f-chol"), d.find_element(By.ID, "f-chol-msg")
    _type(chol, "2e")
    assert chol_msg.text == "not a number"
    # submitting an out-of-range value is refused in the page (no request is made)
    d.find_element(By.ID, "predict-btn").click()
    assert d.find_element(By.ID, "result").get_attribute("hidden") is not None
    assert d.switch_to.active_element == bp  # focus moves to the first invalid field (schema order)

    # valid values
    for name, v in RECORD.items():
        el = d.find_element(By.ID, "f-" + name)
        if el.tag_name == "select":
            Select(el).select_by_visible_text(str(v))
        else:
            _type(el, str(v))
            assert d.find_element(By.ID, f"f-{name}-msg").text == "", name
    d.find_element(By.ID, "predict-btn").click()
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#contrib .bar-row"), "the bar chart")

    # the risk shown is the API's risk for the same record
    want = httpx.post(server["url"] + "/v1/predict", json={"record": RECORD},
                      headers={"X-API-Key": server["key"]}).json()["predictions"][0]
    shown = d.find_element(By.ID, "risk-value").text
    assert re.fullmatch(r"\d{1,3}\.\d%", shown), shown
    assert abs(float(shown[:-1]) - 100 * want["probability"]) <= 0.05 + 1e-9, (shown, want)
    assert d.find_element(By.ID, "risk-class").text == f"predicted class {want['class']}"
    assert d.find_element(By.ID, "risk-uncertainty").text  # an interval or the test AUROC
    assert d.find_elements(By.CSS_SELECTOR, "#risk-flags li") == []  # nothing missing/outside

    # the bar chart: the top contributions, largest first, bars drawn with the right sign
    ex = httpx.post(server["url"] + "/v1/explain", json={"record": RECORD},
                    headers={"X-API-Key": server["key"]}).json()["contributions"]
    rows = d.find_elements(By.CSS_SELECTOR, "#contrib .bar-row")
    assert len(rows) == min(8, len(ex))
    widths = []
    for row, c in zip(rows, ex):
        assert row.find_element(By.CLASS_NAME, "bar-label").text.startswith(c["feature"])
        assert float(row.find_element(By.CLASS_NAME, "bar-value").text) == pytest.approx(
            c["contribution"], abs=0.006)
        bar = row.find_element(By.CSS_SELECTOR, ".bar")
        assert ("up" if c["contribution"] >= 0 else "down") in bar.get_attribute("class")
        track = row.find_element(By.CLASS_NAME, "bar-track").rect
        r = bar.rect
        assert track["x"] - 1 <= r["x"] and r["x"] + r["width"] <= track["x"] + track["width"] + 1
        mid = track["x"] + track["width"] / 2
        if c["contribution"] >= 0:
            assert abs(r["x"] - mid) <= 1.5  # grows right from the centre line
        else:
            assert abs(r["x"] + r["width"] - mid) <= 1.5  # grows left
        widths.append(r["width"])
    assert widths[0] > 0 and widths == sorted(widths, reverse=True)
    assert d.find_element(By.ID, "explain-method").text.startswith("occlusion-to-reference")

    # the CDS Hooks card as the EHR would show it: same risk, the main contributors, a link
    card = _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#cds-cards .cds-card"), "the card")[0]
    assert f"{100 * want['probability']:.0f}%" in card.find_element(By.CLASS_NAME, "cds-summary").text
    assert "Main contributors" in card.text and ex[0]["feature"] in card.text
    assert card.find_element(By.TAG_NAME, "a").get_attribute("href").startswith(server["url"])

    # drift panel refreshed with the read scope
    _wait(d, lambda d: "recent records" in d.find_element(By.ID, "drift-status").text, "drift")
    drift = d.find_element(By.ID, "drift-status")  # one record: no PSI shown, not "ok"-green
    assert drift.text.startswith("insufficient data") and "PSI" not in drift.text, drift.text
    assert "ok" not in drift.get_attribute("class").split()

    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"
              # expected: the first GET /v1/model, before a key is entered, is a 401
              and not ("/v1/model" in e["message"] and "401" in e["message"])]
    assert not errors, errors  # includes Content-Security-Policy violations and 404s
    save_screenshot(full_page_png(d), tmp_path, "service.png")


def test_page_with_a_wrong_key(server, browser):
    from selenium.webdriver.common.by import By

    d = browser
    d.get(server["url"] + "/")
    d.execute_script("sessionStorage.clear()")
    d.get(server["url"] + "/")

    def use(key):
        _type(d.find_element(By.ID, "api-key"), key)
        d.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()

    use(server["key"])
    _wait(d, lambda d: d.find_element(By.ID, "predict-btn").is_enabled(), "the form")
    use("htk_clinic_wrong")  # a refused key must not leave the previous key's form usable
    _wait(d, lambda d: "not accepted" in d.find_element(By.ID, "auth-msg").text,
          "the key to be refused")
    assert d.find_element(By.ID, "predict-btn").get_attribute("disabled") is not None
    assert not d.find_elements(By.CSS_SELECTOR, "#fields input, #fields select")
