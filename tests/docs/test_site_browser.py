"""The documentation site, built with ``mkdocs build --strict`` and opened in headless Chromium.

Checks what only a built site shows: the build passes in strict mode, the generated pages are
there, no page loads a script, stylesheet, font or image from another host (the site must work
offline), and the home page and a tutorial render without console errors. Takes full-page
screenshots; with ``HEALTHTRANSFER_SCREENSHOTS=docs/`` they are saved as ``docs/site-home.png``
and ``docs/site-tutorial.png``.

Needs the ``docs`` extra (``pip install -e ".[docs]"``), ``/usr/bin/chromium`` +
``chromedriver`` and selenium; skipped with the reason otherwise.
"""

import functools
import http.server
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reports"))
from test_report_browser import chromium_driver, full_page_png, save_screenshot  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
# a tag that makes the browser fetch something: <script src>, <link href> (stylesheets, icons,
# fonts), <img src>, <iframe src>, <source src>
FETCHING = re.compile(r"<(script|link|img|iframe|source|video|audio)\b[^>]*?\b(?:src|href)=\"(?P<url>[^\"]+)\"", re.I)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason='pip install -e ".[docs]"')
    pytest.importorskip("material", reason='pip install -e ".[docs]"')
    pytest.importorskip("mkdocstrings_handlers.python", reason='pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_generated_pages_are_built(site):
    for page in ["reference/study-file", "reference/schema-file", "reference/methods", "api/estimators-instance",
                 "benchmarks/heart-shift", "benchmarks/eicu-region", "getting-started", "tutorials/own-data"]:
        assert (site / page / "index.html").is_file(), page
    assert (site / "benchmarks/img/heart_shift.png").read_bytes()[:4] == b"\x89PNG"
    html = (site / "reference/study-file/index.html").read_text()
    assert "labeled_target" in html and "folds_target" in html


def test_no_page_fetches_from_another_host(site):
    external = {}
    for page in site.rglob("*.html"):
        for m in FETCHING.finditer(page.read_text(errors="replace")):
            if re.match(r"(https?:)?//", m.group("url")):
                external.setdefault(m.group("url"), str(page.relative_to(site)))
    assert not external, f"pages load resources from other hosts (the site must build and read offline): {external}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), handler)
    handler.log_message = lambda *a, **k: None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    d = chromium_driver(tmp_path_factory.mktemp("chromium-profile"))
    yield d
    d.quit()


@pytest.mark.parametrize("path, title, shot", [
    ("/", "healthtransfer", "site-home.png"),
    ("/tutorials/own-data/", "Your own data", "site-tutorial.png"),
])
def test_page_renders_offline(served, browser, tmp_path, path, title, shot):
    browser.get(served + path)
    h1 = browser.find_element("css selector", "article h1").text
    assert title in h1
    hosts = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).host)")
    own = served.removeprefix("http://")
    assert set(hosts) <= {own}, f"the page fetched from other hosts: {sorted(set(hosts) - {own})}"
    broken = browser.execute_script(
        "return [...document.images].filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)")
    assert not broken, broken
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    save_screenshot(full_page_png(browser), tmp_path, shot)
