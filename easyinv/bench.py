"""Throughput benchmark: what a run costs per method and batch size, how far it is from the UNet-bound floor, and
what the full EasyInv tables would take on this device.

The floor of a run is NFE × (time of one UNet row at the best batch size) + two VAE calls; everything else is
overhead. :func:`run_bench` times the real runner (the code path of a benchmark run, not a copy) over a folder of
bundled images; :func:`summarize_bench` and :func:`project` are pure functions of the resulting records, so their
arithmetic is tested on synthetic tables. ``scripts/bench.py`` is the command line. Timing lives here, never in tests.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "TABLE1_IMAGES",
    "TABLE1_ROWS",
    "device_slug",
    "markdown",
    "project",
    "run_bench",
    "summarize_bench",
    "write_bench",
]

log = logging.getLogger(__name__)

TABLE1_ROWS = ("vae_only", "ddim", "renoise", "fixed_point", "easyinv")  # the rows of `make reproduce-table1`
FLOW_ROWS = ("vae_only", "euler", "ddim", "fixed_point", "easyinv")  # on a flow model (ReNoise does not apply)
TABLE1_IMAGES = 2298
TABLE2_PRECISIONS = ("fp16", "fp32")  # EasyInv in both: `make reproduce-table2`
NO_REG = "renoise[regularize=false]"  # ReNoise without its regularisation: the difference is that work's share


# --------------------------------------------------------------------------------------------------------------------
# Arithmetic on records
# --------------------------------------------------------------------------------------------------------------------


def summarize_bench(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (label, precision, batch size) over timed ``ok`` rows (warm-up excluded).

    Sums, not means of ratios: images/s = n / Σ t_total; UNet rows/s = Σ nfe / Σ unet_seconds; ms/NFE its inverse;
    loop overhead = (Σ (t_invert + t_reconstruct) − Σ unet_seconds) / Σ (t_invert + t_reconstruct), the share of the
    inversion and reconstruction walks spent outside the UNet; VAE share = Σ (t_encode + t_decode) / Σ t_total and
    metrics share = Σ t_metrics / Σ t_total. ``peak_mem_mib`` is carried over from the run when present.
    """
    ok = df[(df["status"] == "ok") & ~df["warmup"].astype(bool)]
    rows = []
    keys = ["bench_label", "precision", "bench_batch"]
    for (label, precision, batch), g in ok.groupby(keys, sort=False):
        total = float(g["t_total"].sum())
        walk = float((g["t_invert"] + g["t_reconstruct"]).sum())
        unet = float(g["unet_seconds"].sum())
        nfe = float(g["nfe"].astype("float64").sum())
        rows.append({
            "method": label,
            "precision": precision,
            "batch": int(batch),
            "images": len(g),
            "images_per_s": len(g) / total if total > 0 else math.nan,
            "s_per_image": total / len(g),
            "walk_s_per_image": walk / len(g),
            "unet_s_per_image": unet / len(g),
            "nfe_per_image": nfe / len(g),
            "unet_rows_per_s": nfe / unet if unet > 0 else math.nan,
            "ms_per_nfe": 1000 * unet / nfe if nfe > 0 else math.nan,
            "loop_overhead": (walk - unet) / walk if walk > 0 else math.nan,
            "vae_share": float((g["t_encode"] + g["t_decode"]).sum()) / total if total > 0 else math.nan,
            "metrics_share": float(g["t_metrics"].sum()) / total if total > 0 else math.nan,
            "peak_mem_mib": float(g["peak_mem_mib"].max()) if "peak_mem_mib" in g else math.nan,
        })
    return pd.DataFrame(rows)


def best_batches(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (method, precision): the row of the batch size with the highest images/s."""
    if summary.empty:
        return summary
    idx = summary.groupby(["method", "precision"], sort=False)["images_per_s"].idxmax()
    return summary.loc[idx].reset_index(drop=True)


def project(
    summary: pd.DataFrame,
    precision: str,
    rows: Sequence[str] = TABLE1_ROWS,
    images: int = TABLE1_IMAGES,
    table2: Sequence[str] = TABLE2_PRECISIONS,
) -> dict[str, Any]:
    """Wall time of the full tables at each row's best batch size: Σ images / (images/s).

    Table 1: ``rows`` at ``precision``; Table 2: EasyInv at each of ``table2``. A row or precision that was not
    measured makes its total NaN and is listed under ``missing``.
    """
    best = best_batches(summary)
    lookup = {(r.method, r.precision): r for r in best.itertuples()}

    def cost(pairs: list[tuple[str, str]]) -> tuple[float, list[str], dict[str, int]]:
        seconds, missing, chosen = 0.0, [], {}
        for method, prec in pairs:
            row = lookup.get((method, prec))
            if row is None or not row.images_per_s > 0:
                missing.append(f"{method} ({prec})")
                continue
            seconds += images / row.images_per_s
            chosen[f"{method} ({prec})"] = int(row.batch)
        return (math.nan if missing else seconds), missing, chosen

    t1, miss1, b1 = cost([(m, precision) for m in rows])
    t2, miss2, b2 = cost([("easyinv", p) for p in table2])
    return {"images": images, "table1_s": t1, "table1_missing": miss1, "table1_batches": b1,
            "table2_s": t2, "table2_missing": miss2, "table2_batches": b2}


def regularisation_share(summary: pd.DataFrame) -> pd.DataFrame:
    """ReNoise's regularisation as a share of its walk time, per precision and batch: the extra time outside the
    UNet of ``renoise`` over ``renoise[regularize=false]`` (same grid, same predictions, no regularisation)."""
    out = []
    for (prec, batch), g in summary.groupby(["precision", "batch"], sort=False):
        reg, plain = g[g.method == "renoise"], g[g.method == NO_REG]
        if reg.empty or plain.empty:
            continue
        r, p = reg.iloc[0], plain.iloc[0]
        outside_r = r.walk_s_per_image - r.unet_s_per_image  # seconds per image outside the UNet, each run
        outside_p = p.walk_s_per_image - p.unet_s_per_image
        out.append({"precision": prec, "batch": int(batch), "renoise_loop_overhead": r.loop_overhead,
                    "without_regularisation": p.loop_overhead,
                    "regularisation_share": (outside_r - outside_p) / r.walk_s_per_image})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory while a block runs: CUDA max allocated on a GPU, the process's resident set (sampled) on a CPU."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            proc = psutil.Process()
            self.peak = proc.memory_info().rss

            def sample() -> None:
                while not self._stop.wait(0.02):
                    self.peak = max(self.peak, proc.memory_info().rss)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()

    @property
    def mib(self) -> float:
        return self.peak / 2**20


def make_images(folder: Path, count: int) -> Path:
    """``count`` distinct image files cycling through the bundled photos and probes (what the bench decodes)."""
    from easyinv.data.samples import SAMPLES_DIR

    sources = sorted(p for p in SAMPLES_DIR.rglob("*.png"))
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        target = folder / f"img{n:04d}.png"
        if not target.exists():
            shutil.copyfile(sources[n % len(sources)], target)
    return folder


def _compose(overrides: Sequence[str]) -> Any:
    from hydra import compose, initialize_config_dir

    from easyinv.plugins import register_search_path
    from easyinv.validation import CONFIG_DIR

    register_search_path()  # a plugin's method is a choice here too
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("config", overrides=list(overrides))


def default_methods(overrides: Sequence[str]) -> tuple[str, ...]:
    """The bench's rows for the model the overrides choose: Table 1's on SD, :data:`FLOW_ROWS` on a flow model."""
    cfg = _compose(["experiment=none", *overrides])
    return FLOW_ROWS if str(cfg.model.get("path", "vp")) == "flow" else TABLE1_ROWS


def run_bench(
    overrides: Sequence[str],
    methods: Sequence[str],
    batch_sizes: Sequence[int],
    images: int,
    workdir: Path,
    table2: bool = True,
    renoise_split: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run every method at every batch size on ``images`` timed images (one more batch runs first as warm-up).

    Returns the timed records (with ``bench_label``, ``bench_batch``, ``peak_mem_mib``, ``job_wall_s``) and the
    run facts (device, versions, dtype, compile mode). ``table2`` adds EasyInv in the other Table-2 precision at the
    best batch size; ``renoise_split`` adds ReNoise without regularisation, to report that work's share.
    """
    from easyinv.run.reconstruction import Job
    from easyinv.run.records import read_records

    root = Path(__file__).resolve().parent.parent
    base = ["experiment=none", "metrics.lpips.random_trunk=true", f"paths.root={root}", "dataset=folder",
            *overrides]
    frames, facts = [], {}
    jobs: list[tuple[str, list[str], int]] = []
    for name in methods:
        for batch in batch_sizes:
            jobs.append((name, [f"method={name}"], batch))
            if name == "renoise" and renoise_split:
                jobs.append((NO_REG, ["method=renoise", "method.regularize=false"], batch))

    def one(label: str, extra: list[str], batch: int) -> pd.DataFrame:
        timed = max(images, batch) + (-max(images, batch)) % batch  # whole batches only
        folder = make_images(workdir / "images", timed + batch)
        cfg = _compose([*base, f"dataset.root={folder}", f"dataset.limit={timed + batch}", f"batch_size={batch}",
                        *extra])
        run_dir = workdir / "runs" / re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{label}-{cfg.precision.name}-b{batch}")
        job = Job(cfg, run_dir)
        start = time.perf_counter()
        with PeakMemory(str(job.device)) as mem:
            job.run()
        wall = time.perf_counter() - start
        if not facts:
            facts.update(_facts(cfg, job))
        df = read_records([run_dir])
        return df.assign(bench_label=label, bench_batch=batch, peak_mem_mib=mem.mib, job_wall_s=wall)

    for label, extra, batch in jobs:
        log.info("bench: %s at batch %d", label, batch)
        frames.append(one(label, extra, batch))
    records = pd.concat(frames, ignore_index=True)
    if table2 and "easyinv" in methods:
        measured = str(records["precision"].iloc[0])
        best = best_batches(summarize_bench(records))
        batch = int(best[best.method == "easyinv"].batch.iloc[0])
        for prec in TABLE2_PRECISIONS:
            if prec != measured:
                frames.append(one("easyinv", ["method=easyinv", f"precision={prec}"], batch))
        records = pd.concat(frames, ignore_index=True)
    return records, facts


def _facts(cfg: Any, job: Any) -> dict[str, Any]:
    import subprocess

    import torch

    device = job.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent.parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {
        "device": str(device), "device_name": name, "model": str(cfg.model.name),
        "path": str(cfg.model.get("path", "vp")),
        "resolution": int(cfg.model.resolution), "precision": str(cfg.precision.name),
        "dtype_unet": str(cfg.precision.unet), "compile": str(cfg.model.compile),
        "channels_last": bool(cfg.model.channels_last), "torch": torch.__version__,
        "diffusers": importlib.metadata.version("diffusers"), "git_sha": sha,
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
    }


def _cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


# --------------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------------


def device_slug(facts: dict[str, Any]) -> str:
    """``cpu-tiny-sd-64px-fp32`` or ``cuda-nvidia-h100-sd14-random-512px-fp16-compile-max-autotune``."""
    kind = "cpu" if not str(facts["device"]).startswith("cuda") else "cuda-" + str(facts["device_name"])
    parts = [kind, str(facts["model"]), f"{facts['resolution']}px", str(facts["precision"])]
    if facts.get("compile", "none") != "none":
        parts.append(f"compile-{facts['compile']}")
    if facts.get("channels_last"):
        parts.append("channels-last")
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def _hours(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "—"
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


COLUMNS = {
    "method": "method", "precision": "precision", "batch": "B", "images": "images", "images_per_s": "img/s",
    "s_per_image": "s/img", "nfe_per_image": "NFE/img", "unet_rows_per_s": "UNet rows/s", "ms_per_nfe": "ms/NFE",
    "loop_overhead": "loop overhead", "vae_share": "VAE share", "metrics_share": "metrics share",
    "peak_mem_mib": "peak MiB",
}


def markdown(summary: pd.DataFrame, facts: dict[str, Any], command: str = "") -> str:
    """The benchmark page: facts, the per-method × batch table, speed-up over B = 1, ReNoise's regularisation share
    and the projected wall time of the full Table 1 and Table 2."""
    shown = summary.rename(columns=COLUMNS)[list(COLUMNS.values())].copy()
    for col, fmt in (("img/s", "{:.3f}"), ("s/img", "{:.3f}"), ("NFE/img", "{:.1f}"), ("UNet rows/s", "{:.1f}"),
                     ("ms/NFE", "{:.2f}"), ("loop overhead", "{:.1%}"), ("VAE share", "{:.1%}"),
                     ("metrics share", "{:.1%}"), ("peak MiB", "{:.0f}")):
        shown[col] = [fmt.format(v) if isinstance(v, (int, float, np.number)) and math.isfinite(v) else "—"
                      for v in shown[col]]
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join(":---" if i < 2 else "---:" for i in range(len(shown.columns))) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    lines = [
        f"# Benchmark: {facts['device_name']} · {facts['model']} at {facts['resolution']} px · {facts['precision']}"
        f" · compile {facts['compile']}",
        "",
        f"device `{facts['device']}` ({facts['device_name']}), torch {facts['torch']}, diffusers {facts['diffusers']},"
        f" UNet dtype {facts['dtype_unet']}, compile {facts['compile']}, channels_last {facts['channels_last']},"
        f" {facts['threads']} CPU threads, git {facts['git_sha']}, {facts['date']}",
        "",
    ]
    if command:
        lines += [f"`{command}`", ""]
    lines += [header, rule, *body, ""]
    speed = []
    for (method, prec), g in summary.groupby(["method", "precision"], sort=False):
        one = g[g.batch == 1]
        if len(one) and len(g) > 1:
            top = g.loc[g.images_per_s.idxmax()]
            speed.append(f"{method} ({prec}): ×{top.images_per_s / one.images_per_s.iloc[0]:.2f} at B = {top.batch}")
    if speed:
        lines += ["Throughput at the best batch size over B = 1: " + "; ".join(speed) + ".", ""]
    reg = regularisation_share(summary)
    if not reg.empty:
        parts = [f"B = {r.batch}: {r.regularisation_share:.1%} of its walk" for r in reg.itertuples()]
        lines += ["ReNoise's regularisation (its overhead minus that of `renoise[regularize=false]`): "
                  + "; ".join(parts) + ".", ""]
    rows = FLOW_ROWS if facts.get("path") == "flow" else TABLE1_ROWS
    proj = project(summary, facts["precision"], rows=rows)
    t1 = ", ".join(f"{k} B={v}" for k, v in proj["table1_batches"].items())
    t2 = ", ".join(f"{k} B={v}" for k, v in proj["table2_batches"].items())
    lines += [
        f"Projected wall time on this device (each row at its best B, {proj['images']:,} images per row, pipeline "
        "time; loading and writing overlap it):",
        "",
        f"- Table 1 protocol ({len(rows)} rows: {', '.join(rows)}): **{_hours(proj['table1_s'])}** ({t1})"
        + (f"; not measured: {', '.join(proj['table1_missing'])}" if proj["table1_missing"] else ""),
        f"- Table 2 (EasyInv fp16 + fp32): **{_hours(proj['table2_s'])}** ({t2})"
        + (f"; not measured: {', '.join(proj['table2_missing'])}" if proj["table2_missing"] else ""),
        "",
        "Loop overhead = (invert + reconstruct − UNet) / (invert + reconstruct). Shares are of the whole per-image "
        "pipeline (encode, invert, reconstruct, decode, metrics). Peak memory: CUDA max allocated, or the process's "
        "resident set on a CPU.",
    ]
    return "\n".join(lines) + "\n"


def write_bench(summary: pd.DataFrame, facts: dict[str, Any], out_dir: Path, command: str = "") -> dict[str, Path]:
    """``<slug>.md`` and ``<slug>.csv`` (the summary with the facts as columns) under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = device_slug(facts)
    md, csv = out_dir / f"{slug}.md", out_dir / f"{slug}.csv"
    md.write_text(markdown(summary, facts, command), encoding="utf-8")
    table = summary.assign(**{k: v for k, v in facts.items() if k not in summary.columns})
    table.to_csv(csv, index=False, float_format="%.6g", lineterminator="\n")
    return {"md": md, "csv": csv}
