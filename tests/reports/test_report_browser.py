"""The study report in a real browser: headless Chromium opens ``report.html`` from the demo.

Checks what only a browser can: every section heading renders, every embedded PNG decodes
(``naturalWidth > 0``), nothing is fetched from the network, and the page has no console
errors. Takes a full-page screenshot; with ``HEALTHTRANSFER_SCREENSHOTS=docs/`` it is saved as
``docs/report.png`` (the picture in the README/docs).

Needs ``/usr/bin/chromium`` + ``/usr/bin/chromedriver`` (Debian: ``apt-get install chromium
chromium-driver``) and ``pip install selenium``; skipped with the reason otherwise.
"""

import base64
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthtransfer.cli import app

SECTIONS = ["Study", "Harmonisation", "Shift diagnostics", "Model selection", "Calibration",
            "Subgroups", "Explanations", "Recommendation", "Results"]
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900"]

pytestmark = pytest.mark.slow


def chromium_driver(profile_dir: Path):
    """Headless Chromium via the system chromedriver (never downloads a browser or driver)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("headless Chromium not available: install the Debian packages `chromium` "
                    "and `chromium-driver` (.ci/run does)")
    pytest.importorskip("selenium", reason="pip install selenium (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile_dir}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver,
                      log_output=str(profile_dir.parent / "chromedriver.log"))
    return webdriver.Chrome(options=opts, service=service)


def full_page_png(driver) -> bytes:
    """A screenshot of the whole page, not just the viewport (Chrome DevTools Protocol)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "fromSurface": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    return base64.b64decode(shot["data"])


def save_screenshot(png: bytes, tmp_path: Path, name: str) -> Path:
    """Always under tmp_path; also in $HEALTHTRANSFER_SCREENSHOTS (e.g. ``docs/``) when set."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    (tmp_path / name).write_bytes(png)
    dest = os.environ.get("HEALTHTRANSFER_SCREENSHOTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        (Path(dest) / name).write_bytes(png)
        return Path(dest) / name
    return tmp_path / name


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--seeds", "2", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    return out / "report.html"


@pytest.fixture(scope="module")
def page(report, tmp_path_factory):
    driver = chromium_driver(tmp_path_factory.mktemp("chrome") / "profile")
    try:
        driver.get(report.as_uri())
        driver.execute_script("return document.fonts.ready")
        yield driver
    finally:
        driver.quit()


def test_every_section_heading_renders(page):
    headings = [h.text.strip() for h in page.find_elements("css selector", "h2")]
    missing = [s for s in SECTIONS if s not in headings]
    assert not missing, f"sections missing from the report: {missing}; present: {headings}"
    for h in page.find_elements("css selector", "h2"):
        assert h.is_displayed() and h.size["height"] > 0, h.text


def test_reproducibility_footer(page):
    footers = page.find_elements("css selector", "footer#reproducibility")
    assert len(footers) == 1, "no <footer id='reproducibility'>"
    assert footers[0].is_displayed() and footers[0].text.strip()


def test_every_image_loaded(page):
    imgs = page.execute_script(
        "return Array.from(document.images).map(i => ({src: i.src.slice(0, 30), alt: i.alt,"
        " complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))")
    assert imgs, "the report has no <img>"
    broken = [i for i in imgs if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not broken, broken
    assert all(i["src"].startswith("data:image/png;base64,") for i in imgs), imgs


def test_self_contained_and_no_console_errors(page):
    fetched = page.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith('data:'))")
    assert fetched == [], f"the report fetched external resources: {fetched}"
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_full_page_screenshot(page, tmp_path):
    png = full_page_png(page)
    path = save_screenshot(png, tmp_path, "report.png")
    assert path.is_file()
