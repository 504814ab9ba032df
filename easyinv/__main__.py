"""``easyinv-bench`` / ``python -m easyinv``: the Hydra app. With no arguments it runs ``experiment=demo``."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from easyinv.validation import CONFIG_DIR, ConfigError, check_cli_choices


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from easyinv.records import RecordsBusyError
    from easyinv.runner import run  # imported here so `--help` and config errors stay fast

    try:
        return run(cfg)
    except (ConfigError, FileNotFoundError, RecordsBusyError) as e:  # one line, no traceback: names the key or path
        raise SystemExit(f"easyinv-bench: {e}") from None


def main() -> None:
    try:
        check_cli_choices(sys.argv[1:])
    except ConfigError as e:
        raise SystemExit(f"easyinv-bench: {e}") from None
    _app()


if __name__ == "__main__":
    main()
