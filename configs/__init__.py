"""The built-in config groups (Hydra), shipped in the wheel as the package ``easyinv.configs`` (pyproject.toml)."""
