"""The documentation site in a real browser (headless Chromium through selenium), served offline from 127.0.0.1 as
``make docs-serve`` serves it (Material's search runs in a web worker, which a file:// page cannot start): the front
page renders, the search finds a method from its index with no network, a module-reference page has its
mkdocstrings entries, no page logs a console error or fetches anything from another host, and every internal link
of every page (and its #anchor) resolves. Needs ``make setup-browser``; skips in one line without a browser."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
import time
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from test_docs import build_site

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                 reason="no chromium/chromedriver installed (make setup-browser installs them)")]


class _Links(HTMLParser):
    """The href of every <a> and the id of every element of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]))


def _parse(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """No line per request on stderr."""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site, served by python's http.server on a free port of 127.0.0.1 for the module's tests."""
    pytest.importorskip("mkdocs", reason="the docs extra is missing (pip install -e '.[docs]')")
    root = tmp_path_factory.mktemp("site") / "site"
    done = build_site(root)
    assert done.returncode == 0, done.stderr[-4000:]
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def driver():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,900"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        yield browser
    finally:
        browser.quit()


def _wait(driver, script: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def _open(driver, url: str) -> None:
    driver.get(url)
    _wait(driver, "return document.readyState === 'complete'")


def _no_errors_and_nothing_from_outside(driver, base: str) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [u for u in fetched if not u.startswith(base)]
    assert not outside, outside


def test_front_page_search_and_an_api_page(site, driver):
    _, base = site
    _open(driver, base + "index.html")
    assert driver.title.startswith("easyinv-bench")
    assert "inversion and editing" in driver.find_element("css selector", "article").text
    nav = driver.execute_script("return Array.from(document.querySelectorAll('.md-nav__link')).map(a => a.textContent"
                                ".trim())")
    assert {"Getting started", "Methods", "Configuration", "Module reference", "Troubleshooting"} <= set(nav)
    _no_errors_and_nothing_from_outside(driver, base)

    box = driver.find_element("css selector", "input[data-md-component='search-query']")
    _wait(driver, "return !document.querySelector('input[data-md-component=\"search-query\"]').disabled")
    box.click()
    box.send_keys("fixed-point")
    titles = _wait(driver, "const r = Array.from(document.querySelectorAll('.md-search-result__item'))"
                           ".map(e => e.textContent); return r.length ? r : null")
    assert any("Methods" in t or "fixed" in t.lower() for t in titles), titles
    _no_errors_and_nothing_from_outside(driver, base)

    _open(driver, base + "modules.html")
    headings = driver.execute_script("return Array.from(document.querySelectorAll('.doc-heading code, "
                                     ".doc-heading')).map(e => e.textContent)")
    assert any("make_method" in h for h in headings) and any("EasyInv" in h for h in headings), headings[:20]
    _no_errors_and_nothing_from_outside(driver, base)


def test_every_internal_link_resolves(site):
    root, base = site
    pages = {p.relative_to(root).as_posix(): _parse(p.read_text(encoding="utf-8")) for p in root.rglob("*.html")}
    checked = 0
    for name, page in sorted(pages.items()):
        for href in page.hrefs:
            target = urljoin(base + name, href)
            if not target.startswith(base):  # another host: not fetched (the build never loads one, see test_docs)
                continue
            parts = urlsplit(target)
            path = parts.path.removeprefix(urlsplit(base).path) or "index.html"
            if path.endswith("/"):
                path += "index.html"
            with urllib.request.urlopen(base + path, timeout=10) as response:  # noqa: S310 - our own server
                assert response.status == 200, f"{name}: {href}"
            if parts.fragment and path.endswith(".html"):
                assert parts.fragment in pages[path].ids, f"{name}: {href} has no anchor #{parts.fragment}"
            checked += 1
    assert checked > 300 and re.search(r"getting-started\.html", " ".join(pages["index.html"].hrefs))
