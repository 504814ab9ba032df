"""report.html from synthetic runs with saved PNGs: well-formed, no external URL, every link and every image path the
page builds exists, thumbnails cached once; the per-image data carries statuses and failure reasons."""

from __future__ import annotations

import json
import math
import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

from easyinv.report import main, write_report
from easyinv.report.paired import PairedSettings
from easyinv.run.files import recon_png_path, ref_png_path, save_png, thumb_path
from easyinv.run.records import Record, RecordWriter

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
METHODS = ("ddim", "renoise", "easyinv")  # the tables' (paper's) order
ITEMS = [f"photos/img{i}.png" for i in range(5)] + ["probes/flat.png"]


class StrictParser(HTMLParser):
    """Well-formedness by hand: every non-void element closed in order, nothing left open; links collected."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.links: list[str] = []
        self.errors: list[str] = []
        self.json: list[str] = []
        self._in_json = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.links.append(value)
        if tag == "script" and ("type", "application/json") in attrs:
            self._in_json = True
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'} at {self.getpos()}")
            return
        self.stack.pop()
        self._in_json = False

    def handle_data(self, data: str) -> None:
        if self._in_json:
            self.json.append(data)


class TableParser(HTMLParser):
    """Every <table id=...> of the page: its header cells (text, attributes, whether a button holds the text) and its
    body rows (per cell: text and attributes)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, dict[str, list]] = {}
        self._table: dict[str, list] | None = None
        self._cell: dict | None = None
        self._section = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = self.tables.setdefault(str(a["id"]), {"heads": [], "rows": []})
        elif self._table is None:
            return
        elif tag in ("thead", "tbody"):
            self._section = tag
        elif tag == "tr" and self._section == "tbody":
            self._table["rows"].append([])
        elif tag in ("th", "td"):
            self._cell = {"text": "", "attrs": a, "button": False}
        elif tag == "button" and self._cell is not None:
            self._cell["button"] = a.get("type") == "button"

    def handle_endtag(self, tag: str) -> None:
        if self._table is None:
            return
        if tag == "table":
            self._table = None
        elif tag in ("th", "td") and self._cell is not None:
            self._cell["text"] = self._cell["text"].strip()
            (self._table["heads"] if self._section == "thead" else self._table["rows"][-1]).append(self._cell)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


def _tables(page: Path) -> dict[str, dict[str, list]]:
    parser = TableParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.tables


def _column(table: dict[str, list], header: str) -> list[dict]:
    j = [h["text"] for h in table["heads"]].index(header)
    return [row[j] for row in table["rows"]]


def _runs(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for k, method in enumerate(METHODS):
        run = root / f"method={method}"
        with RecordWriter(run / "records.jsonl") as writer:
            for i, item in enumerate(ITEMS):
                ref = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
                save_png(ref, ref_png_path(run, item))
                failed = method == "renoise" and i == 2
                if not failed:
                    save_png(np.clip(ref.astype(int) + 3 * k, 0, 255), recon_png_path(run, method, item))
                writer.append(Record(
                    item_id=item, method=method, method_label=method, dataset="samples", model="gaussian",
                    precision="fp32", config_hash=method, device="cpu", status="nonfinite" if failed else "ok",
                    reason="NaN latent at invert step 3" if failed else None, psnr=None if failed else 30.0 + i - k,
                    ssim=None if failed else 0.9, lpips=None if failed else 0.1, latent_mse=None if failed else 0.01,
                    nfe=100, t_total=1.0, t_invert=0.4, t_reconstruct=0.4, unet_seconds=0.5, warmup=i == 0,
                    lpips_comparable=False, flag="degenerate" if (method == "easyinv" and i == 5) else None))
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = _runs(tmp_path_factory.mktemp("runs"))
    written = write_report([root], root / "report", paper_dir=None, html=True)
    return root, written


def test_html_is_well_formed_self_contained_and_every_link_exists(report):
    root, written = report
    page = written["html"]
    assert page == root / "report" / "report.html"
    text = page.read_text(encoding="utf-8")
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert "://" not in text  # no CDN, no absolute URL of any kind
    assert parser.links
    for link in parser.links:
        parsed = urlparse(link)
        assert not parsed.scheme and not parsed.netloc and not link.startswith("/"), link
        assert (page.parent / unquote(parsed.path)).exists(), link
    assert {"table1.md", "table1.csv", "table1.tex"} <= {Path(unquote(x)).name for x in parser.links}


def test_every_image_the_page_builds_exists_and_statuses_are_carried(report):
    root, written = report
    parser = StrictParser()
    parser.feed(written["html"].read_text(encoding="utf-8"))
    data = json.loads("".join(parser.json))
    assert data["methods"] == list(METHODS) and len(data["items"]) == len(ITEMS)
    assert [it[1] for it in data["items"]] == ["photos"] * 5 + ["probes"]
    base = written["html"].parent
    paths = []
    for (item, _, stem, ref), cells in zip(data["items"], data["cells"], strict=True):
        paths += [f"{data['dirs'][ref][j]}/{stem}.{ext}" for j, ext in ((0, "png"), (1, "jpg"))]
        for method, cell in zip(METHODS, cells, strict=True):
            (where,) = cell[3]
            if method == "renoise" and item == ITEMS[2]:
                assert cell[:2] == ["nonfinite", "NaN latent at invert step 3"] and where == -1
                continue
            paths += [f"{data['dirs'][where][j]}/{stem}.{ext}" for j, ext in ((0, "png"), (1, "jpg"))]
    for path in paths:
        assert (base / unquote(path)).is_file(), path
    psnr = [m["key"] for m in data["metrics"]].index("psnr")
    assert data["cells"][1][2][2][psnr] == pytest.approx(29.0)  # item 1, easyinv: 30 + 1 − 2
    assert data["cells"][5][2][0] == "degenerate"  # flagged ok rows are filtered as their flag


def test_tables_sort_by_unrounded_numbers_from_buttons_and_carry_the_paired_statistics(report):
    root, written = report
    table = pd.read_csv(written["table1_csv"])
    tables = _tables(written["html"])
    shown = tables["table1-0"]
    # every header is a button (Tab reaches it, Enter and Space press it) with its order in aria-sort
    assert all(h["button"] and h["attrs"].get("aria-sort") == "none" for h in shown["heads"])
    assert [c["text"] for c in _column(shown, "Method")] == table["label"].tolist()
    for header, column in (("PSNR ↑", "psnr_mean"), ("LPIPS ↓", "lpips_mean"), ("n", "n_ok"),
                           ("Δ PSNR vs ddim", "pair_psnr_delta"), ("Time/img (s)", "time_s_mean")):
        raw = [float(c["attrs"]["data-sort"]) if c["attrs"]["data-sort"] else math.nan for c in _column(shown, header)]
        np.testing.assert_allclose(raw, table[column], atol=1e-6, err_msg=header)
    assert "data-sort" not in _column(shown, "Method")[0]["attrs"]  # text sorts as text
    failures = {c["text"]: float(c["attrs"]["data-sort"]) for c in _column(shown, "Failures")}
    assert failures == {"0": 0.0, "1 nonfinite": 1.0, "1 degenerate": 1.0}
    # the paired statistics: each Δ cell's tooltip, and a table row per compared row and metric
    for cell, (_, row) in zip(_column(shown, "Δ PSNR vs ddim"), table.iterrows(), strict=True):
        if pd.isna(row["pair_baseline"]):
            assert "title" not in cell["attrs"]
            continue
        title = cell["attrs"]["title"]
        assert f"Wilcoxon p {row['pair_psnr_p']:.3g}" in title and f"Holm p {row['pair_psnr_p_holm']:.3g}" in title
        assert f"win rate {100 * row['pair_psnr_win']:.1f} %" in title and title.startswith("row − ddim")
    pairs = tables["table1-0-pairs"]
    heads = [h["text"] for h in pairs["heads"]]
    assert heads[:2] == ["Method", "Metric"] and {"p (Wilcoxon)", "p (Holm)", "Win rate"} <= set(heads)
    assert [(r[0]["text"], r[1]["text"]) for r in pairs["rows"]] == [
        (m, name) for m in ("renoise", "easyinv") for name in ("LPIPS", "SSIM", "PSNR", "latent MSE")]
    row = table.set_index("label").loc["easyinv"]
    line = next(r for r in pairs["rows"] if r[0]["text"] == "easyinv" and r[1]["text"] == "PSNR")
    for stat, header in (("p", "p (Wilcoxon)"), ("p_holm", "p (Holm)"), ("win", "Win rate"), ("n", "Pairs")):
        assert float(line[heads.index(header)]["attrs"]["data-sort"]) == pytest.approx(row[f"pair_psnr_{stat}"],
                                                                                       abs=1e-6)


def test_sort_values_are_the_frames_numbers_not_the_printed_text():
    from easyinv.report.html import sort_values

    frame = pd.DataFrame({
        "label": ["exact", "ddim", "bad"], "n_ok": [10, 10, 7], "lpips_mean": [0.0, 8.9e-5, 0.3],
        "psnr_mean": [math.inf, 40.0, math.nan], "non_unet_share": [0.5, 0.25, 0.125],
        "n_nonfinite": [0, 0, 1], "n_error": [0, 0, 2], "n_degenerate": [0, 2, 0],
        "pair_baseline": [None, None, "ddim"], "pair_psnr_delta": [math.nan, math.nan, -1.5],
        "pair_psnr_n": [math.nan, math.nan, 7], "pair_lpips_n": [math.nan, math.nan, 6],
        "paper_lpips": [0.3, math.nan, math.nan], "diff_lpips": [-0.3, math.nan, math.nan], "eta": [0.5, 1.0, 2.0]})
    columns = ["Method", "n", "LPIPS ↓", "PSNR ↑", "non-UNet %", "Failures", "Pairs vs ddim", "Δ PSNR vs ddim",
               "Paper LPIPS", "Δ LPIPS", "eta", "label"]
    got = sort_values(columns, frame)
    assert [row[0] for row in got] == [None] * 3 and [row[-1] for row in got] == [None] * 3  # text columns
    assert [row[1] for row in got] == ["10.0", "10.0", "7.0"]
    assert [row[2] for row in got] == ["0.0", "8.9e-05", "0.3"]  # 8.9e-5 prints as 0.000 but does not tie with 0
    assert [row[3] for row in got] == ["Infinity", "40.0", ""]
    assert [row[4] for row in got] == ["50.0", "25.0", "12.5"]
    assert [row[5] for row in got] == ["0.0", "2.0", "3.0"]  # all failures: "1 nonfinite, 2 error" is 3, after "2 ..."
    assert [row[6] for row in got] == ["", "", "7.0"]
    assert [row[7] for row in got] == ["", "", "-1.5"]
    assert [row[8] for row in got] == ["0.3", "", ""] and [row[9] for row in got] == ["-0.3", "", ""]
    assert [row[10] for row in got] == ["0.5", "1.0", "2.0"]  # a swept number sorts by its value


def test_the_per_image_view_pages_below_too_and_differences_are_b_minus_a(report):
    from easyinv.report.browse import _json_number
    from easyinv.report.html import TEMPLATES

    _, written = report
    text = written["html"].read_text(encoding="utf-8")
    section = text[text.index('<section id="images-recon"'):]
    section = section[:section.index("</section>")]
    assert section.count('class="pager"') == 2
    assert section.index('data-role="scroller"') < section.rindex('class="pager"')  # one pager under the table
    assert "B − A" in section and "row − baseline" in section
    script = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    assert "A − B" not in script and "A − B" not in section
    parser = StrictParser()
    parser.feed(text)
    assert json.loads("".join(parser.json))["baseline"] == "ddim"  # A's default: the tables' baseline
    # the per-image numbers keep a value that prints as 0 apart from 0
    assert _json_number(8.9e-5, 3) == pytest.approx(8.9e-5) and _json_number(0.0, 3) == 0.0
    assert _json_number(43.6939351, 3) == 43.69394
    # the tables' and the images' boxes scroll both ways, bounded, so their sticky header and first column hold
    style = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    assert ".scroll { overflow: auto; max-height:" in style and ".scroll.images-scroll { max-height:" in style
    assert "table.sortable td:first-child, table.images td:first-child { position: sticky; left: 0;" in style


def test_thumbnails_are_made_once_and_the_cli_writes_the_page(report, capsys):
    root, _ = report
    thumb = thumb_path(root / "method=ddim", recon_png_path(root / "method=ddim", "ddim", ITEMS[0]))
    assert thumb.is_file() and thumb.suffix == ".jpg"
    os.utime(thumb, (1e10, 1e10))  # a cached thumbnail newer than its PNG is reused, not rewritten
    assert main([str(root), "--out", str(root / "again"), "--html", "--no-figures", "--paper", "none",
                 "--bootstrap", "200"]) == 0
    assert thumb.stat().st_mtime == 1e10
    assert "html: " in capsys.readouterr().out and (root / "again" / "report.html").is_file()


def test_editing_runs_get_paired_columns_and_an_editing_view(tmp_path):
    from easyinv.run.files import edit_png_path

    rng = np.random.default_rng(1)
    protocols = ("ddim+free+p2p", "easyinv+free+p2p")
    for k, protocol in enumerate(protocols):
        run = tmp_path / "runs" / protocol
        with RecordWriter(run / "records.jsonl") as writer:
            for i in range(8):
                item = f"{i:012d}"
                image = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
                for path in (ref_png_path(run, item), recon_png_path(run, protocol, item),
                             edit_png_path(run, protocol, item)):
                    save_png(image, path)
                metrics = {"structure_distance": 0.02 - 0.005 * k + 0.001 * rng.random(), "psnr_unedit_part": 25.0,
                           "lpips_unedit_part": 0.1, "mse_unedit_part": 0.01, "ssim_unedit_part": 0.8,
                           "clip_similarity_target_image": 25.0, "clip_similarity_target_image_edit_part": 22.0,
                           "clip_similarity_source_image": 20.0}
                writer.append(Record(
                    item_id=item, method=protocol.split("+")[0], method_label=protocol, dataset="piebench",
                    model="tiny-sd", precision="fp32", config_hash=protocol, device="cpu", psnr=30.0, nfe=100,
                    t_total=1.0, warmup=i == 0,
                    extra={"protocol": protocol, "edit_type": i % 2, **metrics}))
    written = write_report([tmp_path / "runs"], tmp_path / "report", paper_dir=None, html=True,
                           paired=PairedSettings(bootstrap=200))
    text = written["editing_md"].read_text()
    assert "Pairs vs ddim+free+p2p" in text and "Δ Structure vs ddim+free+p2p" in text
    table = pd.read_csv(written["editing_csv"]).set_index("protocol")
    row = table.loc["easyinv+free+p2p"]  # structure ×10³: about 5 lower on all 8 images
    # the Hodges–Lehmann shift of the per-image differences (median of the Walsh averages), at the printed scale ×10³
    from easyinv.run.records import read_records

    per_image = {p: read_records(tmp_path / "runs" / p).set_index("item_id")["structure_distance"] for p in protocols}
    d = 1e3 * (per_image["easyinv+free+p2p"] - per_image["ddim+free+p2p"]).to_numpy()
    walsh = [(d[i] + d[j]) / 2 for i in range(d.size) for j in range(i, d.size)]
    assert row["pair_structure_distance_delta"] == pytest.approx(float(np.median(walsh)), rel=1e-9)
    assert row["pair_structure_distance_win"] == 1.0 and row["pair_structure_distance_significant"] == 1
    assert f"| {row['pair_structure_distance_delta']:+.2f}*" in text
    parser = StrictParser()
    parser.feed(written["html"].read_text(encoding="utf-8"))
    data = json.loads("".join(parser.json))
    assert data["kinds"] == ["recon", "edit"] and data["methods"] == list(protocols)
    assert all(cell[3][0] >= 0 and cell[3][1] >= 0 for cells in data["cells"] for cell in cells)
    assert data["baseline"] == "ddim+free+p2p"
    # the editing tables sort by the CSV's numbers and show the paired statistics
    shown = _tables(written["html"])["editing-0"]
    cells = _column(shown, "Δ Structure vs ddim+free+p2p")
    assert float(cells[1]["attrs"]["data-sort"]) == pytest.approx(row["pair_structure_distance_delta"], rel=1e-5)
    assert f"Holm p {row['pair_structure_distance_p_holm']:.3g}" in cells[1]["attrs"]["title"]
    assert float(_column(shown, "Structure ×10³ ↓")[1]["attrs"]["data-sort"]) == pytest.approx(
        row["structure_distance_mean"], rel=1e-5)
