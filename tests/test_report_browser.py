"""The demo's report.html in a real browser (headless Chromium through selenium): sort a table, filter the images to
failures, open the per-image and side-by-side views, check the rows shown, the image that sorts first, and that
every <img> loads; the tables sort by their unrounded numbers and from the keyboard, their header row and first
column stay on screen when they scroll, the paired p-values and win rates are on the page, the side-by-side view's
difference has the tables' sign, and the per-image view has a pager under its table too. No console errors.
Needs ``make setup-browser`` (CI runs it); skips in one line where no browser is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                 reason="no chromium/chromedriver installed (make setup-browser installs them)")]


def _browser(size: str = "1400,1000"):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={size}"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _wait(driver, script: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def _rows(driver, view: str = "recon") -> list[str]:
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('#images-{view} tr.item-row')).map(r => r.dataset.item)")


def _all_images_loaded(driver) -> list[tuple[str, int]]:
    _wait(driver, "return Array.from(document.images).every(i => i.complete)")
    return driver.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")


def _fail(root: Path, method: str, failures: dict[int, tuple[str, str]]) -> None:
    """Turn the method's records of the given lines into failures (status, reason), their metrics gone."""
    records = root / "results" / "runs" / "demo" / f"method={method}" / "records.jsonl"
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    for i, (status, reason) in failures.items():
        lines[i].update(status=status, reason=reason, psnr=None, ssim=None, lpips=None, latent_mse=None)
    records.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    """`make demo`'s run (4 images), then failures injected and the report written again: renoise fails three
    images (1 nonfinite, 2 errors: its Failures cell's first count is 1 of 3), fixed_point two (2 nonfinite)."""
    root = tmp_path_factory.mktemp("demo")
    _run("-m", "easyinv", "dataset.limit=4", f"paths.root={root}", cwd=root)
    report = root / "results" / "runs" / "demo_report" / "report.html"
    assert report.is_file()  # the demo writes it (report.html: true)
    _fail(root, "renoise", {1: ("nonfinite", "NaN latent (injected by the test)"), 2: ("error", "injected error"),
                            3: ("error", "injected error")})
    _fail(root, "fixed_point", {0: ("nonfinite", "NaN latent"), 1: ("nonfinite", "NaN latent")})
    _run("-m", "easyinv.report", str(root / "results" / "runs" / "demo"), "--out", str(report.parent), "--html",
         "--bootstrap", "500", cwd=root)
    return report


def _records(report: Path) -> pd.DataFrame:
    files = sorted((report.parents[1] / "demo").glob("*/records.jsonl"))
    return pd.concat([pd.read_json(p, lines=True) for p in files])


def _no_console_errors(driver) -> None:
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []


def test_the_demo_report_in_headless_chromium(demo_report):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    table = pd.read_csv(demo_report.parent / "table1.csv")
    records = _records(demo_report)
    failed = records[records["status"] != "ok"]
    assert len(failed) == 5
    ddim = records[(records["method"] == "ddim") & (records["status"] == "ok")]
    driver = _browser()
    try:
        driver.get(demo_report.as_uri())
        # Table 1 sorted by PSNR, ascending then descending
        header = driver.find_element(By.XPATH, "//table[@id='table1-0']//th[normalize-space()='PSNR ↑']")
        header.click()
        first = driver.find_element(By.CSS_SELECTOR, "#table1-0 tbody tr:first-child td:first-child").text
        assert first == table.loc[table["psnr_mean"].idxmin(), "label"]
        header.click()
        psnr_column = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#table1-0 th")].index("PSNR ↑")
        top = driver.find_elements(By.CSS_SELECTOR, "#table1-0 tbody tr:first-child td")[psnr_column].text
        assert top == "∞"  # a pixel-identical reconstruction (VAE only, fixed point) sorts above every number
        # the per-image view: every image a row, then the failures only
        driver.find_element(By.CSS_SELECTOR, "[data-tab='images-recon']").click()
        assert driver.find_element(By.ID, "images-recon").is_displayed()
        assert len(_rows(driver)) == records["item_id"].nunique() == 4
        view = driver.find_element(By.ID, "images-recon")
        Select(view.find_element(By.CSS_SELECTOR, "[data-role='status']")).select_by_value("failures")
        assert sorted(_rows(driver)) == sorted(records["item_id"].unique())  # every image failed somewhere
        Select(view.find_element(By.CSS_SELECTOR, "[data-role='method']")).select_by_visible_text("renoise")
        Select(view.find_element(By.CSS_SELECTOR, "[data-role='status']")).select_by_value("nonfinite")
        nonfinite = failed[(failed["method"] == "renoise") & (failed["status"] == "nonfinite")]
        assert _rows(driver) == list(nonfinite["item_id"])
        assert "NaN latent (injected by the test)" in view.find_element(By.CSS_SELECTOR, "tr.item-row").text
        Select(view.find_element(By.CSS_SELECTOR, "[data-role='method']")).select_by_value("")
        Select(view.find_element(By.CSS_SELECTOR, "[data-role='status']")).select_by_value("")
        # sorted by ddim's PSNR, ascending: the worst-reconstructed image first
        Select(view.find_element(By.CSS_SELECTOR, "[data-role='sort']")).select_by_visible_text("PSNR ↑")
        Select(view.find_element(By.CSS_SELECTOR, "[data-role='sort-method']")).select_by_visible_text("ddim")
        assert _rows(driver)[0] == ddim.loc[ddim["psnr"].idxmin(), "item_id"]
        assert view.find_element(By.CSS_SELECTOR, "[data-role='count']").text == "4"
        # side by side: reference, both methods, both error maps
        view.find_element(By.CSS_SELECTOR, "tr.item-row button.open-compare").click()
        compare = view.find_element(By.CSS_SELECTOR, "[data-role='compare']")
        assert compare.is_displayed() and ddim.loc[ddim["psnr"].idxmin(), "item_id"] in compare.text
        assert len(compare.find_elements(By.CSS_SELECTOR, ".errmap")) == 2
        images = _all_images_loaded(driver)
        assert len(images) >= 4 * 6 + 5, images  # 4 rows × (reference + 5 methods), the compare panel, figures
        assert all(width > 0 for _, width in images), [src for src, width in images if width <= 0]
        _no_console_errors(driver)
    finally:
        driver.quit()


def _column(driver, table: str, header: str) -> list[str]:
    """The cells of a column of a table, top to bottom, as shown."""
    return driver.execute_script(
        "const t = document.getElementById(arguments[0]);"
        "const j = Array.from(t.tHead.rows[0].cells).findIndex(h => h.textContent.trim() === arguments[1]);"
        "return Array.from(t.tBodies[0].rows).map(r => r.cells[j].textContent.trim());", table, header)


def _column_of_md(report: Path, header: str) -> list[str]:
    lines = [line for line in (report.parent / "table1.md").read_text().splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines]
    j = cells[0].index(header)
    return [row[j] for row in cells[2:]]


def test_tables_sort_by_unrounded_numbers(demo_report):
    from selenium.webdriver.common.by import By

    table = pd.read_csv(demo_report.parent / "table1.csv")
    # the printed LPIPS of ddim (about 1e-4), fixed_point and vae_only (exactly 0) is the same 0.000 ± 0.000
    printed = dict(zip(table["label"], _column_of_md(demo_report, "LPIPS ↓"), strict=True))
    assert printed["ddim"] == printed["vae_only"] and table.set_index("label").loc["ddim", "lpips_mean"] > 0
    driver = _browser()
    try:
        driver.get(demo_report.as_uri())
        header = driver.find_element(By.XPATH, "//table[@id='table1-0']//th[normalize-space()='LPIPS ↓']")
        header.click()  # ascending by the unrounded means: the exact 0s before ddim
        expected = table.sort_values("lpips_mean", kind="stable")["label"].tolist()
        assert expected.index("ddim") > expected.index("vae_only")
        assert _column(driver, "table1-0", "Method") == expected
        header.click()
        expected = table.sort_values("lpips_mean", ascending=False, kind="stable")["label"].tolist()
        assert _column(driver, "table1-0", "Method") == expected
        # Failures sort by all failures: "1 nonfinite, 2 error" (3) after "2 nonfinite" (2)
        assert set(_column(driver, "table1-0", "Failures")) >= {"1 nonfinite, 2 error", "2 nonfinite"}
        driver.find_element(By.XPATH, "//table[@id='table1-0']//th[normalize-space()='Failures']").click()
        total = table[[c for c in table.columns if c in
                       ("n_nonfinite", "n_degenerate", "n_error", "n_skipped", "n_retried")]].sum(axis=1)
        shown = _column(driver, "table1-0", "Method")
        totals = [dict(zip(table["label"], total, strict=True))[label] for label in shown]
        assert totals == sorted(totals) and shown[-2:] == ["fixed_point", "renoise"]
        _no_console_errors(driver)
    finally:
        driver.quit()


def test_table_headers_sort_from_the_keyboard(demo_report):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    table = pd.read_csv(demo_report.parent / "table1.csv")
    driver = _browser()
    try:
        driver.get(demo_report.as_uri())
        heads = driver.find_elements(By.CSS_SELECTOR, "#table1-0 thead th")
        assert all(h.get_attribute("aria-sort") == "none" for h in heads)
        # Tab from the table's last file link reaches its first header, Tab again the next ones
        driver.execute_script("const links = document.getElementById('table1-0').closest('.scroll')"
                              ".previousElementSibling.querySelectorAll('a'); links[links.length - 1].focus()")
        keys = ActionChains(driver)
        keys.send_keys(Keys.TAB).perform()
        assert driver.execute_script("return document.activeElement.closest('th') === arguments[0]", heads[0])
        psnr = [h.text for h in heads].index("PSNR ↑")
        for _ in range(psnr):
            keys.send_keys(Keys.TAB).perform()
        assert driver.execute_script("return document.activeElement.closest('th') === arguments[0]", heads[psnr])
        keys.send_keys(Keys.ENTER).perform()  # Enter: ascending
        assert heads[psnr].get_attribute("aria-sort") == "ascending"
        assert [h.get_attribute("aria-sort") for h in heads].count("none") == len(heads) - 1
        assert _column(driver, "table1-0", "Method") == table.sort_values("psnr_mean", kind="stable")["label"].tolist()
        keys.send_keys(Keys.SPACE).perform()  # Space: descending
        assert heads[psnr].get_attribute("aria-sort") == "descending"
        assert _column(driver, "table1-0", "Method") == table.sort_values(
            "psnr_mean", ascending=False, kind="stable")["label"].tolist()
        _no_console_errors(driver)
    finally:
        driver.quit()


def _visible(driver, element) -> bool:
    """On screen and on top at its centre (not hidden under another element or scrolled out of the window)."""
    return driver.execute_script(
        "const e = arguments[0], r = e.getBoundingClientRect();"
        "const x = (r.left + r.right) / 2, y = (r.top + r.bottom) / 2;"
        "if (r.top < -1 || r.bottom > innerHeight + 1 || x < 0 || x > innerWidth) return false;"
        "const hit = document.elementFromPoint(x, y); return hit !== null && (hit === e || e.contains(hit));",
        element)


def test_table1s_method_column_stays_when_it_scrolls_sideways(demo_report):
    from selenium.webdriver.common.by import By

    driver = _browser("900,600")  # Table 1 is wider than the window
    try:
        driver.get(demo_report.as_uri())
        box = driver.find_element(By.CSS_SELECTOR, "#table1-0").find_element(By.XPATH, "..")
        width = driver.execute_script("return [arguments[0].scrollWidth, arguments[0].clientWidth]", box)
        assert width[0] > width[1]
        driver.execute_script("arguments[0].scrollLeft = arguments[0].scrollWidth", box)
        assert _visible(driver, driver.find_element(By.CSS_SELECTOR, "#table1-0 thead th:last-child"))  # right end
        # the Method column is still there, over the columns scrolled under it
        first = driver.find_elements(By.CSS_SELECTOR, "#table1-0 tbody tr td:first-child")
        assert [c.text for c in first] == pd.read_csv(demo_report.parent / "table1.csv")["label"].tolist()
        assert all(_visible(driver, c) for c in first)
        assert _visible(driver, driver.find_element(By.CSS_SELECTOR, "#table1-0 thead th:first-child"))
        _no_console_errors(driver)
    finally:
        driver.quit()


def test_per_image_column_headers_stay_when_the_page_scrolls(demo_report):
    from selenium.webdriver.common.by import By

    driver = _browser("900,600")  # the per-image view is taller than the window
    try:
        driver.get(demo_report.as_uri())
        driver.find_element(By.CSS_SELECTOR, "[data-tab='images-recon']").click()
        rows = driver.find_elements(By.CSS_SELECTOR, "#images-recon tr.item-row")
        # scrolled to the last row, the page to its end: every column on screen is still named
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'}); window.scrollTo(0, 1e6)", rows[-1])
        assert driver.execute_script("return window.scrollY") > 0  # the page did scroll
        heads = driver.find_elements(By.CSS_SELECTOR, "#images-recon thead th")
        assert [h.text for h in heads][2:] == ["ddim", "renoise", "fixed_point", "easyinv", "vae_only"]
        on_screen = [h for h in heads if driver.execute_script(
            "return arguments[0].getBoundingClientRect().right <= innerWidth", h)]
        assert len(on_screen) >= 4 and all(_visible(driver, h) for h in on_screen), [h.text for h in on_screen]
        assert _visible(driver, rows[-1].find_element(By.CSS_SELECTOR, "td.id"))
        first, head = driver.execute_script("return [arguments[0].getBoundingClientRect().top, "
                                            "arguments[1].getBoundingClientRect().top]", rows[0], heads[0])
        assert first < head  # the first rows scrolled up under the header
        _no_console_errors(driver)
    finally:
        driver.quit()


def test_paired_p_values_and_win_rates_are_on_the_page(demo_report):
    from selenium.webdriver.common.by import By

    table = pd.read_csv(demo_report.parent / "table1.csv").set_index("label")
    row = table.loc["easyinv"]
    driver = _browser()
    try:
        driver.get(demo_report.as_uri())
        cells = driver.find_elements(By.CSS_SELECTOR, "#table1-0 tbody tr")
        easyinv = next(r for r in cells if r.find_element(By.CSS_SELECTOR, "td").text == "easyinv")
        heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#table1-0 thead th")]
        delta = easyinv.find_elements(By.CSS_SELECTOR, "td")[heads.index("Δ PSNR vs ddim")]
        title = delta.get_attribute("title")
        assert f"Wilcoxon p {row['pair_psnr_p']:.3g}" in title and f"Holm p {row['pair_psnr_p_holm']:.3g}" in title
        assert f"win rate {100 * row['pair_psnr_win']:.1f} %" in title and "row − ddim" in title
        # the details under the table: every compared row and metric, with the CSV's numbers
        details = driver.find_element(By.CSS_SELECTOR, "details.pairs")
        pairs = details.find_element(By.CSS_SELECTOR, "table.pair-stats")
        assert not pairs.is_displayed()
        details.find_element(By.CSS_SELECTOR, "summary").click()
        assert pairs.is_displayed()
        columns = [h.text for h in pairs.find_elements(By.CSS_SELECTOR, "thead th")]
        lines = {(r[0], r[1]): r for r in driver.execute_script(
            "return Array.from(arguments[0].tBodies[0].rows).map(r => Array.from(r.cells).map("
            "c => c.dataset.sort === undefined ? c.textContent.trim() : c.dataset.sort))", pairs)}
        compared = table[table["pair_baseline"].notna()].index
        assert {method for method, _ in lines} == set(compared) and ("ddim", "PSNR") not in lines
        line = lines[("easyinv", "PSNR")]
        for stat, column in (("delta", "Δ (row − ddim)"), ("p", "p (Wilcoxon)"), ("p_holm", "p (Holm)"),
                             ("win", "Win rate"), ("n", "Pairs"), ("left_out", "Left out")):
            assert float(line[columns.index(column)]) == pytest.approx(row[f"pair_psnr_{stat}"], abs=1e-6), stat
        # sortable by p
        pairs.find_element(By.XPATH, ".//th[normalize-space()='p (Holm)']").click()
        shown = [float(v) for v in driver.execute_script(
            "return Array.from(arguments[0].tBodies[0].rows).map(r => r.cells[arguments[1]].dataset.sort)", pairs,
            columns.index("p (Holm)"))]
        assert shown == sorted(shown)
        _no_console_errors(driver)
    finally:
        driver.quit()


def _paged(report: Path) -> Path:
    """The same page with 2 images a page (its links stay valid beside it)."""
    paged = report.with_name("report_paged.html")
    paged.write_text(report.read_text(encoding="utf-8").replace('data-page-size="25"', 'data-page-size="2"'),
                     encoding="utf-8")
    return paged


def _psnr(report: Path) -> pd.Series:
    records = _records(report)
    return records[records["status"] == "ok"].set_index(["method", "item_id"])["psnr"]


def test_side_by_side_difference_has_the_tables_sign(demo_report):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    psnr = _psnr(demo_report)
    table = pd.read_csv(demo_report.parent / "table1.csv").set_index("label")
    assert table.loc["easyinv", "pair_psnr_delta"] < 0 and table.loc["easyinv", "pair_baseline"] == "ddim"
    driver = _browser()
    try:
        driver.get(demo_report.as_uri())
        driver.find_element(By.CSS_SELECTOR, "[data-tab='images-recon']").click()
        view = driver.find_element(By.ID, "images-recon")
        # the page says which way round, and A is the tables' baseline
        assert "B − A" in view.text and "row − baseline" in view.text and "A − B" not in view.text
        assert Select(view.find_element(By.CSS_SELECTOR, "[data-role='a']")).first_selected_option.text == "ddim"
        Select(view.find_element(By.CSS_SELECTOR, "[data-role='b']")).select_by_visible_text("easyinv")
        sort = Select(view.find_element(By.CSS_SELECTOR, "[data-role='sort']"))
        assert "PSNR ↑: A − B" not in [o.text for o in sort.options]
        sort.select_by_visible_text("PSNR ↑: B − A")  # ascending: where easyinv loses most to ddim first
        diff = (psnr["easyinv"] - psnr["ddim"]).sort_values()
        assert _rows(driver) == list(diff.index)
        # side by side on that image: B − A is easyinv − ddim, negative as easyinv's Δ PSNR vs ddim in Table 1
        view.find_element(By.CSS_SELECTOR, "tr.item-row button.open-compare").click()
        metrics = view.find_element(By.CSS_SELECTOR, "[data-role='compare-metrics']")
        head = [th.text for th in metrics.find_elements(By.CSS_SELECTOR, "th")]
        assert head[-1] == "B − A" and head[1:3] == ["A: ddim", "B: easyinv"]
        line = next(r for r in metrics.find_elements(By.CSS_SELECTOR, "tr") if r.text.startswith("PSNR"))
        a, b, d = (float(td.text) for td in line.find_elements(By.CSS_SELECTOR, "td")[1:])
        assert d == pytest.approx(b - a, abs=2e-3) and d == pytest.approx(diff.iloc[0], abs=2e-3) and d < 0
        _no_console_errors(driver)
    finally:
        driver.quit()


def test_per_image_view_has_a_pager_under_the_table_too(demo_report):
    from selenium.webdriver.common.by import By

    driver = _browser("900,600")
    try:
        driver.get(_paged(demo_report).as_uri())
        driver.find_element(By.CSS_SELECTOR, "[data-tab='images-recon']").click()
        view = driver.find_element(By.ID, "images-recon")
        first = _rows(driver)
        pagers = view.find_elements(By.CSS_SELECTOR, ".pager")
        assert len(pagers) == 2
        scroller = view.find_element(By.CSS_SELECTOR, ".scroll")
        assert driver.execute_script("return !!(arguments[0].compareDocumentPosition(arguments[1]) & "
                                     "Node.DOCUMENT_POSITION_FOLLOWING)", scroller, pagers[1])  # under the table

        def ranges() -> list[str]:
            return [p.find_element(By.CSS_SELECTOR, "[data-role='range']").text for p in pagers]

        assert ranges() == ["1–2", "1–2"] and len(first) == 2
        bottom = pagers[1]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", bottom)
        assert _visible(driver, bottom.find_element(By.CSS_SELECTOR, "[data-role='next']"))
        bottom.find_element(By.CSS_SELECTOR, "[data-role='next']").click()  # turns the page of both
        assert ranges() == ["3–4", "3–4"] and len(_rows(driver)) == 2 and not set(_rows(driver)) & set(first)
        assert not bottom.find_element(By.CSS_SELECTOR, "[data-role='next']").is_enabled()
        assert not pagers[0].find_element(By.CSS_SELECTOR, "[data-role='next']").is_enabled()
        assert driver.execute_script("return arguments[0].scrollTop", scroller) == 0  # the new page from its top
        bottom.find_element(By.CSS_SELECTOR, "[data-role='prev']").click()
        assert _rows(driver) == first and ranges() == ["1–2", "1–2"]
        _no_console_errors(driver)
    finally:
        driver.quit()
