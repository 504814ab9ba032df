"""One benchmark job: a dataset through encode → invert → reconstruct → decode → metrics, one durable record per image.

The job's directory is a function of the experiment and its overrides, so running the same command again finds
its records and skips every (image, config) pair already recorded: a killed run loses at most the batch in flight.
Bad items, non-finite latents and per-batch exceptions become records with a status, never a lost run. A job may
be split into shards (``easyinv.run.shards``) that write their own records files into the same directory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from easyinv.data.base import Item, SkipItem
from easyinv.metrics import ImageMetrics, latent_mse, to_uint8
from easyinv.models.base import InversionModel
from easyinv.run.files import latents_path, recon_png_path, ref_png_path, save_png, step_png_path
from easyinv.run.job_parts import (
    PhaseTimer,
    check_config,
    check_loaded_model,
    image_seed,
    images_to_tensor,
    load_model,
    method_label,
    walk_batch,
)
from easyinv.run.pipelining import BackgroundWriter, prefetch
from easyinv.run.records import (
    RecordWriter,
    config_hash,
    done_keys,
    environment_info,
    flatten,
    read_records,
    records_files,
    write_run_manifest,
)
from easyinv.validation import parse_dtype

log = logging.getLogger(__name__)

FP32_PARTS = ("unet", "vae", "latent")


@dataclass
class LoadedBatch:
    """A batch after decoding: all its items, those whose image loaded (with the images), and skipped rows."""

    items: list[Item]
    good: list[Item] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


class Job:
    """Everything one job needs, built in the order that lets bad configs fail before weights load."""

    edits = False  # whether check_config builds and checks the config's edit group too (the editing job)

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = ()):
        self.cfg = cfg
        self.run_dir = run_dir
        checked = check_config(cfg, edit=self.edits)  # every config check, before anything loads
        self.method, self.dataset, self.editor = checked.method, checked.dataset, checked.editor
        self.label = method_label(str(cfg.method.name), overrides)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(resolved, dict)
        self.hash = config_hash(resolved)  # records.HASH_EXCLUDE leaves out what cannot change the numbers
        self.extra = flatten({"method": resolved["method"]})
        self.shard = checked.shard  # this process's slice and device
        self.device = self.shard.device
        self.fallback = str(cfg.precision.get("fallback", "none"))
        if self.fallback == "fp32" and all(parse_dtype(cfg.precision[p]) == torch.float32 for p in FP32_PARTS):
            self.fallback = "none"  # already fp32 throughout: a retry would fail the same way
        self.fp32_model: InversionModel | None = None
        self.records_path = run_dir / self.shard.records_name
        self.save_latents = checked.save_latents
        self._latents: dict[str, dict[int, tuple[torch.Tensor, np.ndarray]]] = {}  # item → step → (latent, image)

    def pending(self) -> tuple[list[Item], list[Item]]:
        """All items in dataset order, and this shard's items not yet recorded under this config hash by any
        writer of the job directory (any shard count, or a single process)."""
        items = self.dataset.items()
        # with an fp32 fallback, non-finite rows of an earlier run get their retry too
        done = done_keys(self.run_dir, retry=("error", "nonfinite") if self.fallback == "fp32" else ("error",),
                         keep_retried=True)
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
        self.model = self._load_model()
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

    def _load_model(self, precision_override: dict[str, str] | None = None) -> InversionModel:
        """The configured model on this job's device, in the configured precision (parts overridden if asked)."""
        model = load_model(self.cfg, self.device, precision_override)
        check_loaded_model(self.method, model)  # what the weights are, not what the config calls them
        return model

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
        if not loaded.good:
            return list(loaded.skipped), []
        rows, pngs = self._run_items_on_device(loaded.good, np.stack(loaded.images), warmup, position)
        return list(loaded.skipped) + rows, pngs

    def _run_items_on_device(
        self, items: list[Item], refs: np.ndarray, warmup: bool, position: dict[str, int]
    ) -> tuple[list[dict[str, Any]], list[tuple[Item, np.ndarray, np.ndarray]]]:
        """Compute ``items`` as one batch. Out of memory: run it again in halves, down to single images; any other
        exception (or out of memory alone) turns the images into ``error`` rows and the run goes on."""
        seeds = [image_seed(int(self.cfg.seed), it.id) for it in items]
        base = [self._base_row(it, s) | {"warmup": warmup, "batch_size": len(items)}
                for it, s in zip(items, seeds, strict=True)]
        try:
            results, recs = self._compute(items, refs, seeds)
        except Exception as e:  # noqa: BLE001 - one bad batch (OOM, a library error) must not end the run
            self._free_memory()
            if is_out_of_memory(e) and len(items) > 1:
                half = (len(items) + 1) // 2
                log.warning("out of memory with %d images: running them as %d + %d", len(items), half,
                            len(items) - half)
                first = self._run_items_on_device(items[:half], refs[:half], warmup, position)
                second = self._run_items_on_device(items[half:], refs[half:], warmup, position)
                return first[0] + second[0], first[1] + second[1]
            log.exception("batch %s failed", [it.id for it in items])
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
            return [b | {"status": "error", "reason": reason} for b in base], []
        if self.fallback == "fp32":
            for k, result in enumerate(results):
                if result["status"] == "nonfinite":
                    results[k], recs[k] = self._retry_in_fp32(items[k], refs[k], seeds[k], result)
        rows, pngs = [], []
        for b, result, item, ref, rec in zip(base, results, items, refs, recs, strict=True):
            rows.append(b | result)
            if result["status"] == "ok" and self._keep_png(position[item.id]):
                pngs.append((item, ref, rec))
            else:
                self._latents.pop(item.id, None)
        return rows, pngs

    def _retry_in_fp32(
        self, item: Item, ref: np.ndarray, seed: int, failed: dict[str, Any]
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Run one non-finite image again alone with UNet, VAE and latents in fp32; keep where it first failed."""
        if self.fp32_model is None:
            log.info("precision.fallback=fp32: loading an fp32 copy of the model for non-finite images")
            self.fp32_model = self._load_model(dict.fromkeys(FP32_PARTS, "float32"))
        log.warning("%s: non-finite at %s; retrying alone in fp32", item.id, failed.get("first_failure"))
        results, recs = self._compute([item], ref[None], [seed], model=self.fp32_model)
        keep = {"first_failure": failed.get("first_failure"), "retried": "fp32"}
        return results[0] | keep | {"batch_size": 1}, recs[0]

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _keep_png(self, index: int) -> bool:
        """PNGs (and stored latents) for the first ``png_limit`` items when ``save_png`` or ``save_latents`` asks."""
        wanted = bool(self.cfg.save_png) or bool(self.save_latents)
        return wanted and (self.cfg.png_limit is None or index < int(self.cfg.png_limit))

    def _save_pngs(self, item: Item, ref: np.ndarray, rec: np.ndarray) -> None:
        save_png(ref, ref_png_path(self.run_dir, item.id))
        save_png(rec, recon_png_path(self.run_dir, self.label, item.id))
        kept = self._latents.pop(item.id, None)
        if kept:
            path = latents_path(self.run_dir, self.label, item.id)
            path.parent.mkdir(parents=True, exist_ok=True)
            steps = sorted(kept)
            torch.save({"item_id": item.id, "method_label": self.label, "num_steps": self.grid.T, "steps": steps,
                        "latents": torch.stack([kept[s][0] for s in steps])}, path)
            for step in steps:
                save_png(kept[step][1], step_png_path(self.run_dir, self.label, item.id, step))

    @torch.no_grad()
    def _compute(
        self, items: list[Item], images: np.ndarray, seeds: list[int], model: InversionModel | None = None
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Encode → invert → reconstruct → decode → metrics for one batch: a result per image, and the uint8
        reconstructions ``(B, H, W, 3)``. ``model`` defaults to the job's (the fp32 fallback passes its own)."""
        cfg, B = self.cfg, len(items)  # noqa: N806
        model = model if model is not None else self.model
        timer = PhaseTimer(self.device)
        walk = walk_batch(model, self.method, self.grid, images_to_tensor(images, self.device),
                          [it.prompt for it in items], seeds, cfg.guidance, timer, keep=self.save_latents)
        z0, inversion, den, watch_inv, watch_rec = walk.z0, walk.inversion, walk.den, walk.watch_inv, walk.watch_rec
        z_rec, x_rec = walk.z_rec, walk.x_rec
        if self.save_latents:
            with timer("latents"):
                self._keep_latents(items, model, {0: inversion.z_T, **watch_rec.latents})
        finite = {
            "z_T": torch.isfinite(inversion.z_T).flatten(1).all(1).cpu(),
            "z_0 reconstruction": torch.isfinite(z_rec).flatten(1).all(1).cpu(),
            "decoded image": torch.isfinite(x_rec).flatten(1).all(1).cpu(),
        }
        first = first_failures(torch.isfinite(z0).flatten(1).all(1).cpu().tolist(), watch_inv.steps(),
                               watch_rec.steps(), finite["decoded image"].tolist())
        rec_u8 = to_uint8(torch.nan_to_num(x_rec.float().cpu())).permute(0, 2, 3, 1).numpy()
        with timer("metrics"):
            scores = self.metrics.measure(rec_u8, images)
            mse = latent_mse(z_rec.float(), z0.float()).cpu()
        nfe_inv, nfe_rec = den.nfe("invert").cpu(), den.nfe("reconstruct").cpu()
        unet_s = den.seconds / B
        unet_calls = den.calls / B  # network invocations (a CFG call covers 2 NFE)
        backward = inversion.backward_passes.cpu() if inversion.backward_passes is not None else None
        state_bytes = inversion.state_bytes()
        phases = {f"t_{k}": v / B for k, v in timer.seconds.items()}
        out = []
        for b in range(B):
            bad = [name for name, ok in finite.items() if not bool(ok[b])]
            nfe = int(nfe_inv[b] + nfe_rec[b])
            row: dict[str, Any] = {
                "nfe": nfe,
                "nfe_invert": int(nfe_inv[b]),
                "nfe_reconstruct": int(nfe_rec[b]),
                "backward_passes": int(backward[b]) if backward is not None else 0,
                "state_bytes": state_bytes,
                **phases,
                "t_total": sum(phases.values()),
                "unet_seconds": unet_s,
                "unet_calls": unet_calls,
                "ms_per_nfe": 1000 * unet_s / nfe if nfe else None,
            }
            if bad or first[b]:
                bad = bad or ["the trajectory"]
                row |= {"status": "nonfinite", "reason": "non-finite values in " + ", ".join(bad),
                        "first_failure": first[b] or "unknown"}
            else:
                row |= {"status": "ok", "reason": "", "latent_mse": float(mse[b]), **scores[b]}
                if is_degenerate(rec_u8[b], images[b]):
                    row["flag"] = "degenerate"
            out.append(row)
        return out, rec_u8


    def _keep_latents(self, items: list[Item], model: InversionModel, latents: dict[int, torch.Tensor]) -> None:
        """The requested trajectory latents of a batch, per item, with their decoded images (kept until the item's
        PNGs are written, or dropped when it keeps none)."""
        for step in self.save_latents:
            decoded = to_uint8(torch.nan_to_num(model.decode(latents[step]).float().cpu())).permute(0, 2, 3, 1).numpy()
            for b, item in enumerate(items):
                self._latents.setdefault(item.id, {})[step] = (latents[step][b].detach().cpu(), decoded[b])


OOM_MESSAGES = ("out of memory", "can't allocate memory")  # CUDA's and the CPU allocator's words


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure (worth retrying with fewer images), as opposed to any other error."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in OOM_MESSAGES)


def first_failures(encoded: list[bool], invert_steps: list[int], reconstruct_steps: list[int],
                   decoded: list[bool]) -> list[str | None]:
    """Per row, where the first non-finite value appeared: ``encode``, ``invert step k`` (after inversion iteration
    k of T), ``reconstruct step k`` (k-th sampling step), ``decode``; None for a finite row."""
    out: list[str | None] = []
    for enc, inv, rec, dec in zip(encoded, invert_steps, reconstruct_steps, decoded, strict=True):
        out.append("encode" if not enc else f"invert step {inv}" if inv >= 0 else
                   f"reconstruct step {rec}" if rec >= 0 else "decode" if not dec else None)
    return out


# A reconstruction is degenerate (the paper's "black images") when it is (near-)flat while its reference is not:
# std of its uint8 pixels below DEGENERATE_STD grey levels and the reference's above REFERENCE_STD.
DEGENERATE_STD = 2.0
REFERENCE_STD = 10.0


def is_degenerate(rec_u8: np.ndarray, ref_u8: np.ndarray) -> bool:
    """Flat reconstruction of a textured reference (both uint8 ``(H, W, 3)``); metrics are still recorded."""
    return float(np.std(rec_u8)) < DEGENERATE_STD and float(np.std(ref_u8)) > REFERENCE_STD
