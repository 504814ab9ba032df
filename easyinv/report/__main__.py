"""``python -m easyinv.report``: the same as ``easyinv-report``."""

from easyinv.report.cli import main

raise SystemExit(main())
