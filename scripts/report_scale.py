"""How report.html holds up at a full Table 1: a synthetic records table of 2,298 images × 10 methods with generated
PNGs, written as runs are; then the report's size, the time to write it (first, making the thumbnails; again, from
the cache) and, in headless Chromium, the time to first paint and until the per-image view shows its first page.

    python scripts/report_scale.py [--images 2298] [--methods 10] [--size 128] [--out .cache/report_scale]
    python scripts/report_scale.py --screenshot results/demo/report_screenshot.png \\
        --report results/runs/demo_report/report.html          # the README's picture of the per-image view

Not a test: numbers depend on the machine (the README quotes one run). Needs chromium + chromedriver for the
browser numbers (make setup-browser); without them only the size and write times are printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from easyinv.report import write_report
from easyinv.run.files import recon_png_path, ref_png_path, save_png
from easyinv.run.records import Record, RecordWriter

METHODS = ("ddim", "renoise", "fixed_point", "easyinv", "null_text", "negative_prompt", "edict", "bdia", "belm",
           "vae_only")


def make_runs(root: Path, images: int, methods: int, size: int, seed: int = 0) -> Path:
    """One run dir per method (as a multirun writes them), records with a few failures of each kind, and PNGs."""
    rng = np.random.default_rng(seed)
    ids = [f"{'val2017' if i % 3 else 'test2017'}/{i:012d}.jpg" for i in range(images)]
    yy, xx = np.mgrid[0:size, 0:size]
    refs = {}
    for k, method in enumerate(METHODS[:methods]):
        run = root / f"method={method}"
        quality = rng.normal(0, 1)
        with RecordWriter(run / "records.jsonl") as writer:
            for i, item in enumerate(ids):
                if item not in refs:
                    phase = rng.uniform(0, 6.28, 3)
                    ref = 127 + 100 * np.sin(xx[..., None] / (5 + i % 7) + phase) * np.cos(yy[..., None] / 9.0)
                    refs[item] = np.clip(ref, 0, 255).astype(np.uint8)
                    save_png(refs[item], ref_png_path(run, item))
                u = rng.random()
                status = "nonfinite" if u < 0.01 else "skipped" if u < 0.012 else "ok"
                noise = rng.normal(0, 2 + k, refs[item].shape)
                if status == "ok":
                    save_png(np.clip(refs[item] + noise, 0, 255).astype(np.uint8), recon_png_path(run, method, item))
                psnr = 28 + quality + rng.normal(0, 2) if status == "ok" else None
                writer.append(Record(
                    item_id=item, method=method, method_label=method, dataset="coco2298", model="sd14",
                    precision="fp16", config_hash=f"{method}-hash", device="cuda", status=status,
                    reason={"nonfinite": "NaN latent at invert step 7", "skipped": "unreadable file"}.get(status),
                    psnr=psnr, ssim=None if psnr is None else 0.6 + rng.normal(0, 0.05),
                    lpips=None if psnr is None else 0.3 + rng.normal(0, 0.03),
                    latent_mse=None if psnr is None else abs(rng.normal(0.01, 0.002)), nfe=100, t_total=5.0,
                    t_invert=2.4, t_reconstruct=2.4, unet_seconds=4.5, warmup=i == 0, lpips_comparable=True,
                    flag="degenerate" if status == "ok" and u > 0.995 else None,
                    retried="fp32" if status == "ok" and 0.99 < u <= 0.995 else None))
    return root


def browser():
    """Headless Chromium through selenium, or None where it is not installed."""
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        return None
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def paint_times(report: Path) -> dict[str, float]:
    """First paint and first contentful paint (ms after navigation start, as Chromium records them), and the time
    from clicking the per-image tab to its first page of rows with every image loaded."""
    driver = browser()
    if driver is None:
        return {}
    try:
        driver.get(report.as_uri())
        paints = driver.execute_script(
            "return Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]))")
        load = driver.execute_script("const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd")
        start = time.perf_counter()
        driver.execute_script("document.querySelector('[data-tab=\"images-recon\"]').click()")
        while not driver.execute_script(
                "const imgs = Array.from(document.querySelectorAll('#images-recon img'));"
                "return imgs.length > 0 && imgs.every(i => i.complete)"):
            time.sleep(0.02)
        shown = 1000 * (time.perf_counter() - start)
        return {"first_paint_ms": paints.get("first-paint", float("nan")),
                "first_contentful_paint_ms": paints.get("first-contentful-paint", float("nan")),
                "load_event_ms": load, "per_image_page_ms": shown}
    finally:
        driver.quit()


def screenshot(report: Path, out: Path) -> Path:
    """The per-image view with the side-by-side view of its first image open, as a PNG (the README's picture)."""
    driver = browser()
    if driver is None:
        raise SystemExit("report_scale: no chromium/chromedriver (make setup-browser)")
    try:
        driver.set_window_size(1280, 1400)
        driver.get(report.as_uri())
        driver.execute_script("document.querySelector('[data-tab=\"images-recon\"]').click();"
                              "document.querySelector('#images-recon [data-role=\"b\"]').value = '3';"
                              "document.querySelector('#images-recon button.open-compare').click();"
                              "window.scrollTo(0, 0);")
        time.sleep(1.0)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    from PIL import Image

    with Image.open(out) as shot:  # a 256-colour palette keeps the committed picture small
        small = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(out, optimize=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2298)
    parser.add_argument("--methods", type=int, default=10)
    parser.add_argument("--size", type=int, default=128, help="side of the generated PNGs")
    parser.add_argument("--out", type=Path, default=Path(".cache/report_scale"))
    parser.add_argument("--screenshot", type=Path, default=None, help="only take the per-image view's screenshot")
    parser.add_argument("--report", type=Path, default=Path("results/runs/demo_report/report.html"))
    args = parser.parse_args()
    if args.screenshot is not None:
        print(screenshot(args.report.resolve(), args.screenshot))
        return
    runs = args.out / "runs"
    if not (runs / f"method={METHODS[args.methods - 1]}" / "records.jsonl").is_file():
        t = time.perf_counter()
        make_runs(runs, args.images, args.methods, args.size)
        print(f"generated {args.images} images × {args.methods} methods in {time.perf_counter() - t:.1f} s")
    times = {}
    for attempt in ("first", "cached"):
        t = time.perf_counter()
        written = write_report([runs], args.out / "report", paper_dir=None, figures=False, html=True)
        times[f"write_{attempt}_s"] = round(time.perf_counter() - t, 2)
    page = written["html"]
    result = {"images": args.images, "methods": args.methods, "png_side": args.size,
              "report_html_bytes": page.stat().st_size, **times, **paint_times(page.resolve())}
    (args.out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
