"""The plugin's tests run against the installed plugin: its config package is on the harness's search path, as it
is in ``easyinv-bench`` (the app registers it at start; a test composing configs registers it here)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from easyinv.plugins import register_search_path  # noqa: E402

register_search_path()
