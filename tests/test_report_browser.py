"""The demo's report.html in a real browser (headless Chromium through selenium): sort a table, filter the images to
failures, open the per-image and side-by-side views, check the rows shown, the image that sorts first, and that
every <img> loads. Needs ``make setup-browser`` (CI runs it); skips in one line where no browser is installed."""

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


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
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


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    """`make demo`'s run (4 images), then one renoise image turned into a failure and the report written again."""
    root = tmp_path_factory.mktemp("demo")
    _run("-m", "easyinv", "dataset.limit=4", f"paths.root={root}", cwd=root)
    report = root / "results" / "runs" / "demo_report" / "report.html"
    assert report.is_file()  # the demo writes it (report.html: true)
    records = root / "results" / "runs" / "demo" / "method=renoise" / "records.jsonl"
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    lines[1].update(status="nonfinite", reason="NaN latent (injected by the test)", psnr=None, ssim=None, lpips=None,
                    latent_mse=None)
    records.write_text("".join(json.dumps(line) + "\n" for line in lines))
    _run("-m", "easyinv.report", str(root / "results" / "runs" / "demo"), "--out", str(report.parent), "--html",
         "--bootstrap", "500", cwd=root)
    return report


def test_the_demo_report_in_headless_chromium(demo_report):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    table = pd.read_csv(demo_report.parent / "table1.csv")
    records = pd.concat([pd.read_json(p, lines=True) for p in
                         sorted((demo_report.parents[1] / "demo").glob("*/records.jsonl"))])
    failed = records[records["status"] != "ok"]
    assert len(failed) == 1
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
        assert _rows(driver) == [failed.iloc[0]["item_id"]]
        assert "NaN latent (injected by the test)" in view.find_element(By.CSS_SELECTOR, "tr.item-row").text
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
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()
