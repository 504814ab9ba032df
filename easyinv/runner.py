"""One benchmark job: a dataset through encode → invert → reconstruct → decode → metrics, one durable record per image.

The job's directory is a function of the experiment and its overrides, so running the same command again finds
its records and skips every (image, config) pair already recorded: a killed run loses at most the batch in flight.
Bad items, non-finite latents and per-batch exceptions become records with a status, never a lost run. A job may
be split into shards (``easyinv.shards``) that write their own records files into the same directory.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from easyinv.data.base import Item, SkipItem
from easyinv.figures import recon_png_path, ref_png_path, save_png
from easyinv.inversion import invert, reconstruct
from easyinv.metrics import ImageMetrics, latent_mse, to_uint8
from easyinv.models.base import check_fast_paths
from easyinv.pipelining import BackgroundWriter, prefetch
from easyinv.records import (
    RecordWriter,
    config_hash,
    done_keys,
    environment_info,
    flatten,
    read_records,
    records_files,
    write_run_manifest,
)
from easyinv.shards import resolve_shard
from easyinv.validation import ConfigError, check_run_config

log = logging.getLogger(__name__)

def image_seed(run_seed: int, item_id: str) -> int:
    """Per-image seed from the run seed and the image id: independent of order, batching and resuming."""
    digest = hashlib.sha256(f"{run_seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def method_label(name: str, overrides: Sequence[str]) -> str:
    """``easyinv`` or, for a job with method overrides, ``easyinv[eta=0.3,k=2]`` (sweeps keep configs apart)."""
    parts = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.startswith("method.") or key.startswith("method/"):
            parts.append(o.lstrip("+~").removeprefix("method.").removeprefix("method/"))
    return f"{name}[{','.join(sorted(parts))}]" if parts else name


def _build(node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate`` that surfaces our own one-line errors instead of Hydra's wrapper around them.

    A ValueError from a constructor is a bad config value (its message names the key); a FileNotFoundError is a
    missing model folder, dataset or LPIPS trunk (its message names the path and the fix).
    """
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, FileNotFoundError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(str(cause).splitlines()[0]) from cause
        raise


@dataclass
class LoadedBatch:
    """A batch after decoding: all its items, those whose image loaded (with the images), and skipped rows."""

    items: list[Item]
    good: list[Item] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


class PhaseTimer:
    """Wall time per phase, CUDA-synchronised so asynchronous kernels are charged to the phase that queued them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class Job:
    """Everything one job needs, built in the order that lets bad configs fail before weights load."""

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = ()):
        self.cfg = cfg
        self.run_dir = run_dir
        self.method = _build(cfg.method)
        blend = getattr(self.method, "blend", None)
        if blend is not None:  # a window that selects nothing at this T is a config error, not 2,298 error rows
            try:
                blend.iterations(self.method.num_steps)
            except ValueError as e:
                raise ConfigError(str(e)) from e
        check_run_config(cfg)
        try:
            check_fast_paths(str(cfg.model.get("compile", "none")), cfg.model.get("channels_last", False))
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.dataset = _build(cfg.dataset)
        self.label = method_label(str(cfg.method.name), overrides)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(resolved, dict)
        self.hash = config_hash(resolved)  # records.HASH_EXCLUDE leaves out what cannot change the numbers
        self.extra = flatten({"method": resolved["method"]})
        self.shard = resolve_shard(cfg.get("shard"), str(cfg.device))  # this process's slice and device
        self.device = self.shard.device
        self.records_path = run_dir / self.shard.records_name

    def pending(self) -> tuple[list[Item], list[Item]]:
        """All items in dataset order, and this shard's items not yet recorded under this config hash by any
        writer of the job directory (any shard count, or a single process)."""
        items = self.dataset.items()
        done = done_keys(self.run_dir)
        return items, [it for it in items if self.shard.owns(it.id) and (it.id, self.hash) not in done]

    def run(self) -> float | None:
        items, todo = self.pending()
        where = "" if self.shard.count == 1 else f", shard {self.shard.index} of {self.shard.count}"
        log.info("%s: %d items, %d to do%s, config %s, run dir %s", self.label, len(items), len(todo), where,
                 self.hash, self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        # a missing LPIPS trunk fails here, before the weights load
        self.metrics = ImageMetrics(self.cfg.metrics, device=self.device)
        if todo:
            with RecordWriter(self.records_path) as writer:
                writer.open()  # the lock: a second process on this shard stops here, before any weights load
                items, todo = self.pending()  # what finished while we waited to start is not redone
                if todo:
                    self._run_items(items, todo, writer)
        return self.objective()

    def objective(self) -> float | None:
        """Mean of ``cfg.objective`` over this config's ok rows (what an Optuna sweep minimises)."""
        key = self.cfg.get("objective")
        files = records_files(self.run_dir, recursive=False) if self.run_dir.is_dir() else []
        if not key or not files:
            return None
        df = read_records(files)
        df = df[(df.config_hash == self.hash) & (df.status == "ok")]
        return float(df[key].mean()) if len(df) and key in df else None

    def _run_items(self, items: list[Item], todo: list[Item], writer: RecordWriter) -> None:
        cfg = self.cfg
        self.model = _build(
            cfg.model.load,
            name=cfg.model.name,
            resolution=cfg.model.resolution,
            precision=OmegaConf.to_container(cfg.precision, resolve=True),
            device=str(self.device),
        )
        self.grid = self.model.grid(self.method.num_steps)
        fast = self.model.accelerate(str(cfg.model.get("compile", "none")), bool(cfg.model.get("channels_last", False)))
        if fast["compile"] != "none":  # compilation happens at the first call: pay it here, not in an image's time
            fast["compile_seconds"] = self._warm_up([it.prompt for it in todo[: int(cfg.batch_size)]])
            log.info("torch.compile(mode=%s) and first calls: %.1f s", fast["compile"], fast["compile_seconds"])
        write_run_manifest(self.run_dir, {
            "config": OmegaConf.to_container(cfg, resolve=True),
            "config_hash": self.hash,
            "method_label": self.label,
            "model": self.model.describe(),
            "dataset": self.dataset.describe(),
            "items": [it.id for it in items],  # the whole selection, every shard's: what --check expects
            "metrics": self.metrics.describe(),
            "grid": {"timesteps": list(self.grid.timesteps)},
            "fast_paths": fast,
            "environment": environment_info(self.device),
        }, device=self.device)
        position = {it.id: n for n, it in enumerate(items)}
        bs = int(cfg.batch_size)
        batches = [todo[start:start + bs] for start in range(0, len(todo), bs)]
        size = int(self.model.resolution)
        with tqdm(total=len(todo), desc=self.label, unit="img", dynamic_ncols=True) as bar, \
                BackgroundWriter(max_pending=2) as persist:
            # images of batch k+1 are decoded while batch k runs; batch k is written while batch k+1 runs
            for n, loaded in enumerate(prefetch(lambda b: self._load_batch(b, size), batches)):
                rows, pngs = self._run_batch(loaded, warmup=n == 0, position=position)
                persist.submit(self._persist, rows, pngs, writer)
                bar.update(len(loaded.items))

    @torch.no_grad()
    def _warm_up(self, prompts: list[str]) -> float:
        """One encode, one UNet call per phase's guidance and one decode at the run's batch shape; seconds taken."""
        cfg, model = self.cfg, self.model
        timer = PhaseTimer(self.device)
        size = int(model.resolution)
        with timer("warm-up"):
            z0 = model.encode(torch.zeros(len(prompts), 3, size, size, device=self.device))
            for phase in ("invert", "reconstruct"):
                if self.grid.T:
                    model.denoiser(prompts, float(cfg.guidance[phase]))(z0, self.grid.timesteps[0])
            model.decode(z0)
        return timer.seconds["warm-up"]

    def _persist(self, rows: list[dict[str, Any]], pngs: list[tuple[Item, np.ndarray, np.ndarray]],
                 writer: RecordWriter) -> None:
        """PNGs first, then the records: a record on disk means its PNGs are there too."""
        for item, ref, rec in pngs:
            self._save_pngs(item, ref, rec)
        for row in rows:
            writer.append(row)

    def _base_row(self, item: Item, seed: int) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "item_id": item.id,
            "dataset": str(cfg.dataset.name),
            "model": str(cfg.model.name),
            "method": str(cfg.method.name),
            "method_label": self.label,
            "precision": str(cfg.precision.name),
            "config_hash": self.hash,
            "seed": seed,
            "device": self.device_name,
            "batch_size": int(cfg.batch_size),
            "prompt": item.prompt,
            **self.extra,
        }

    def _load_batch(self, batch: list[Item], size: int) -> LoadedBatch:
        """Decode a batch (on the prefetch thread): the images that load, and a skipped row for each that does not."""
        loaded = LoadedBatch(items=batch)
        for item in batch:
            try:
                loaded.images.append(self.dataset.load(item, size))
                loaded.good.append(item)
            except SkipItem as e:
                seed = image_seed(int(self.cfg.seed), item.id)
                loaded.skipped.append(self._base_row(item, seed) | {"status": "skipped", "reason": e.reason})
        return loaded

    def _run_batch(
        self, loaded: LoadedBatch, warmup: bool, position: dict[str, int]
    ) -> tuple[list[dict[str, Any]], list[tuple[Item, np.ndarray, np.ndarray]]]:
        """One batch on the device: its rows (skipped ones first), and the PNGs to keep."""
        rows, good = list(loaded.skipped), loaded.good
        if not good:
            return rows, []
        seeds = [image_seed(int(self.cfg.seed), it.id) for it in good]
        base = [self._base_row(it, s) | {"warmup": warmup} for it, s in zip(good, seeds, strict=True)]
        refs = np.stack(loaded.images)
        try:
            results, recs = self._compute(good, refs, seeds)
        except Exception as e:  # noqa: BLE001 - one bad batch (OOM, a library error) must not end the run
            log.exception("batch %s failed", [it.id for it in good])
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return rows + [b | {"status": "error", "reason": reason} for b in base], []
        pngs = []
        for b, result, item, ref, rec in zip(base, results, good, refs, recs, strict=True):
            rows.append(b | result)
            if result["status"] == "ok" and self._keep_png(position[item.id]):
                pngs.append((item, ref, rec))
        return rows, pngs

    def _keep_png(self, index: int) -> bool:
        return bool(self.cfg.save_png) and (self.cfg.png_limit is None or index < int(self.cfg.png_limit))

    def _save_pngs(self, item: Item, ref: np.ndarray, rec: np.ndarray) -> None:
        save_png(ref, ref_png_path(self.run_dir, item.id))
        save_png(rec, recon_png_path(self.run_dir, self.label, item.id))

    @torch.no_grad()
    def _compute(
        self, items: list[Item], images: np.ndarray, seeds: list[int]
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Encode → invert → reconstruct → decode → metrics for one batch: a result per image, and the uint8
        reconstructions ``(B, H, W, 3)``."""
        cfg, model, B = self.cfg, self.model, len(items)  # noqa: N806
        timer = PhaseTimer(self.device)
        prompts = [it.prompt for it in items]
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(self.device)
        with timer("encode"):
            z0 = model.encode(x, seeds)
        eps_inv = model.denoiser(prompts, float(cfg.guidance.invert))
        with timer("invert"):
            inversion = invert(self.method, eps_inv, z0, self.grid, seeds)
        eps_rec = model.denoiser(prompts, float(cfg.guidance.reconstruct))
        with timer("reconstruct"):
            z_rec = reconstruct(eps_rec, inversion.z_T, self.grid)[-1]
        with timer("decode"):
            x_rec = model.decode(z_rec)
        finite = {
            "z_T": torch.isfinite(inversion.z_T).flatten(1).all(1).cpu(),
            "z_0 reconstruction": torch.isfinite(z_rec).flatten(1).all(1).cpu(),
            "decoded image": torch.isfinite(x_rec).flatten(1).all(1).cpu(),
        }
        rec_u8 = to_uint8(torch.nan_to_num(x_rec.float().cpu())).permute(0, 2, 3, 1).numpy()
        with timer("metrics"):
            scores = self.metrics.measure(rec_u8, images)
            mse = latent_mse(z_rec.float(), z0.float()).cpu()
        nfe_inv = inversion.nfe.cpu()
        nfe_rec = eps_rec.nfe.cpu()
        unet_s = (eps_inv.seconds + eps_rec.seconds) / B
        unet_calls = (eps_inv.calls + eps_rec.calls) / B  # network invocations (a CFG call covers 2 NFE)
        phases = {f"t_{k}": v / B for k, v in timer.seconds.items()}
        out = []
        for b in range(B):
            bad = [name for name, ok in finite.items() if not bool(ok[b])]
            nfe = int(nfe_inv[b] + nfe_rec[b])
            row: dict[str, Any] = {
                "nfe": nfe,
                "nfe_invert": int(nfe_inv[b]),
                "nfe_reconstruct": int(nfe_rec[b]),
                **phases,
                "t_total": sum(phases.values()),
                "unet_seconds": unet_s,
                "unet_calls": unet_calls,
                "ms_per_nfe": 1000 * unet_s / nfe if nfe else None,
            }
            if bad:
                row |= {"status": "nonfinite", "reason": "non-finite values in " + ", ".join(bad)}
            else:
                row |= {"status": "ok", "reason": "", "latent_mse": float(mse[b]), **scores[b]}
            out.append(row)
        return out, rec_u8


def run(cfg: DictConfig) -> float | None:
    """Run one job in Hydra's output directory for this job; returns the objective for tuning sweeps."""
    hc = HydraConfig.get()
    job = Job(cfg, Path(hc.runtime.output_dir), overrides=list(hc.overrides.task))
    return job.run()
