"""MkDocs hooks of the documentation site (mkdocs.yml ``hooks:``): pages made from the repository at build time.

- ``configuration.md`` ends with the reference generated from ``configs/`` (``scripts/config_reference.py``), so it
  cannot go stale;
- ``architecture.md`` is ``ARCHITECTURE.md``, the layer map, kept once at the repository's root;
- the committed figures under ``results/`` that pages show are copied in, and a page's ``../results/…`` and
  ``../ARCHITECTURE.md`` links (right on GitHub, beside the files) point at those copies in the site.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- configuration reference: generated from configs/ at build time -->"
FIGURES = ("results/demo", "results/sweep_easyinv/figures", "results/editing_demo_flow/figures")


def _config_reference() -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from config_reference import markdown
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return markdown(ROOT / "configs")


def _figures() -> list[str]:
    """The PNGs under FIGURES that git tracks (never a run's ignored outputs)."""
    out = subprocess.run(["git", "ls-files", "--", *FIGURES], cwd=ROOT, capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        names = out.stdout.split()
    else:  # not a git checkout (an unpacked archive): whatever is there
        names = [p.relative_to(ROOT).as_posix() for d in FIGURES for p in (ROOT / d).rglob("*")]
    return sorted(n for n in names if n.endswith(".png"))


def on_files(files: Files, config) -> Files:
    architecture = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "architecture.md", content=architecture))
    for name in _figures():
        files.append(File.generated(config, name, abs_src_path=str(ROOT / name)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    markdown = re.sub(r"\]\(\.\./results/", "](results/", markdown)
    markdown = markdown.replace("](../ARCHITECTURE.md", "](architecture.md")
    if page.file.src_uri == "configuration.md":
        if MARKER not in markdown:
            raise ValueError(f"docs/configuration.md lost its marker {MARKER!r}")
        markdown = markdown.replace(MARKER, _config_reference())
    return markdown
