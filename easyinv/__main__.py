"""``easyinv-bench`` / ``python -m easyinv``: the Hydra app. With no arguments it runs ``experiment=demo``.

The app is the top of the layers: it builds the job kind the config names (``job._target_``, configs/job/: the
reconstruction job, or the editing job that every edit group selects) and runs it; it knows no job class itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from easyinv.plugins import announce, register_search_path
from easyinv.validation import CONFIG_DIR, ConfigError, check_cli_choices

# (run directory, config hash) of each job this process ran: where easyinv.benchmark reads the records it returns
RUNS: list[tuple[Path, str]] = []


def run_job(cfg: DictConfig) -> float | None:
    """Run the configured job kind in Hydra's output directory for this job; returns the objective for tuning."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_class

    hc = HydraConfig.get()
    job_class = get_class(str(cfg.job._target_))  # imported here so `--help` and config errors stay fast
    job = job_class(cfg, Path(hc.runtime.output_dir), overrides=list(hc.overrides.task))
    RUNS.append((Path(hc.runtime.output_dir), str(job.hash)))
    return job.run()


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from easyinv.run.records import RecordsBusyError

    try:
        return run_job(cfg)
    except (ConfigError, FileNotFoundError, RecordsBusyError) as e:  # one line, no traceback: names the key or path
        raise SystemExit(f"easyinv-bench: {e}") from None


def main() -> None:
    announce()  # one line per plugin problem (a broken or colliding plugin), before Hydra's output
    try:
        check_cli_choices(sys.argv[1:])
    except ConfigError as e:
        raise SystemExit(f"easyinv-bench: {e}") from None
    register_search_path()  # installed plugins' config groups are choices (`--info searchpath` lists them)
    _app()


if __name__ == "__main__":
    main()
