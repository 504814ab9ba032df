"""Tune on one split, report on the other: ``make tune-easyinv`` (needs the ``tune`` extra, hydra-optuna-sweeper).

1. ``easyinv-bench experiment=tune_easyinv [OVERRIDES]``: Optuna's TPE picks η, k and the blend window on the tune
   split and writes ``optimization_results.yaml`` into the sweep directory;
2. the best setting, and the untuned defaults for reference, are run on the eval split, images no trial saw (ordinary
   resumable jobs under ``<paths.runs>/tune_easyinv_eval/``);
3. both scores are printed and saved as ``tune_then_eval.json`` beside the tuning report.

A tuned score is optimistic for the images it was tuned on; the eval score is the one to quote.

    python scripts/tune_then_eval.py [--skip-tune] [OVERRIDES...]
    python scripts/tune_then_eval.py hydra.sweeper.n_trials=32 dataset.tune_fraction=0.25
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from easyinv.report.columns import LOWER_IS_BETTER
from easyinv.validation import CONFIG_DIR

EXPERIMENT = "tune_easyinv"


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The config a job launched with ``overrides`` would get, hydra node included (run and sweep dirs)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def tune(overrides: Sequence[str]) -> None:
    """Run the Optuna sweep in a child process, as ``easyinv-bench`` would (the trials resume when re-run)."""
    subprocess.run([sys.executable, "-m", "easyinv", f"experiment={EXPERIMENT}", *overrides], check=True)


def best_trial(sweep_dir: Path) -> tuple[dict[str, Any], float]:
    """Optuna's best parameters and value from ``optimization_results.yaml``."""
    path = sweep_dir / "optimization_results.yaml"
    if not path.is_file():
        raise SystemExit(f"tune_then_eval: no {path}; run without --skip-tune first")
    results = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(results, dict)
    return dict(results["best_params"]), float(results["best_value"])


def evaluate(overrides: Sequence[str], params: dict[str, Any]) -> tuple[float | None, int, DictConfig]:
    """One job on the eval split in this process; returns the mean objective, the number of images and the config."""
    from easyinv.run.reconstruction import Job  # torch and the models load only when there is something to evaluate

    args = [f"experiment={EXPERIMENT}", *overrides, f"experiment_name={EXPERIMENT}_eval", "dataset.subset=eval",
            *(f"{k}={v}" for k, v in params.items())]
    cfg = compose_config(args)
    run_dir, task = Path(cfg.hydra.run.dir), list(cfg.hydra.overrides.task)
    with open_dict(cfg):
        del cfg["hydra"]
    job = Job(cfg, run_dir, overrides=task)
    value = job.run()
    return value, len(job.dataset.items()), cfg


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-tune", action="store_true", help="use the existing optimization_results.yaml")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the tuning run (and, less hydra.*, eval)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        tuned_cfg = compose_config([f"experiment={EXPERIMENT}", *args.overrides])
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors have no common public base
        raise SystemExit(f"tune_then_eval: {str(e).splitlines()[0]} (is the `tune` extra installed? "
                         "pip install -e '.[tune]')") from None
    objective = str(tuned_cfg.objective)
    direction = str(tuned_cfg.hydra.sweeper.direction).rsplit(".", 1)[-1]
    if objective in LOWER_IS_BETTER and (direction == "minimize") != LOWER_IS_BETTER[objective]:
        raise SystemExit(f"tune_then_eval: objective={objective} with hydra.sweeper.direction={direction} would pick "
                         "the worst setting; flip the direction")
    if not args.skip_tune:
        tune(args.overrides)
    sweep_dir = Path(tuned_cfg.hydra.sweep.dir)
    params, tune_value = best_trial(sweep_dir)
    task_overrides = [o for o in args.overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    tuned_value, n_eval, _ = evaluate(task_overrides, params)
    default_value, _, default_cfg = evaluate(task_overrides, {})
    defaults = {k: OmegaConf.select(default_cfg, k) for k in params}
    defaults = {k: list(v) if OmegaConf.is_list(v) else v for k, v in defaults.items()}

    n_tune = len(_split_items(tuned_cfg))
    summary = {
        "objective": objective, "direction": direction, "sweep_dir": str(sweep_dir),
        "tuned": {"params": params, "tune_split": {"value": tune_value, "n_images": n_tune},
                  "eval_split": {"value": tuned_value, "n_images": n_eval}},
        "defaults": {"params": defaults, "eval_split": {"value": default_value, "n_images": n_eval}},
    }
    out = Path(tuned_cfg.report_dir or sweep_dir) / "tune_then_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    setting = ", ".join(f"{k}={v}" for k, v in params.items())
    print(f"objective: {objective} ({direction}); best of {tuned_cfg.hydra.sweeper.n_trials} trials: {setting}")
    print(f"  tune split ({n_tune} images, tuned on):  {tune_value:.4f}")
    print(f"  eval split ({n_eval} images, held out):  {_fmt(tuned_value)}")
    print(f"  defaults on the eval split ({', '.join(f'{k}={v}' for k, v in defaults.items())}): {_fmt(default_value)}")
    print(f"written: {out}")
    return 0


def _split_items(cfg: DictConfig) -> list[Any]:
    """The items of ``cfg``'s dataset split, listed without decoding an image."""
    from hydra.utils import instantiate

    return instantiate(cfg.dataset, _convert_="all").items()


def _fmt(value: float | None) -> str:
    return "no ok image" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())
