"""The documentation (README.md and docs/) is tested like code (issue 30).

- Every fenced block names its language, and every ``bash``, ``console`` and ``python`` block has a fate: unmarked,
  it runs in the default suite (it must be cheap); after ``<!-- docs-test: slow -->`` it runs in the slow set, in a
  fresh clone, offline, with the small sizes of tests/test_make_targets.py for the ``make`` targets it names; after
  ``<!-- docs-test: skip: <what it needs> -->`` it is not run, and the line says why (the data or machine it needs).
  A ``console`` block's ``$`` lines run and each line shown under one must be in what it printed.
- Every key of ``configs/`` has a comment (the configuration reference is generated from them).
- Every message the troubleshooting page lists is still written in the code, the Makefile or a script.
- The demo tables the pages show are the committed results' tables, row for row.
- The site builds with ``mkdocs build --strict`` (no broken link or reference, no warning), loading nothing from
  outside (slow); tests/test_docs_browser.py opens it in a browser.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"bash", "console", "python", "text", "toml", "yaml"}
RUNNABLE = {"bash", "console", "python"}
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
MARKER = re.compile(r"^\s*<!-- docs-test: (?P<what>slow|skip: (?P<why>.+?)) -->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it is, its language, its text and what the test does with it."""

    page: Path
    line: int
    lang: str
    code: str
    fate: str  # "default", "slow" or "skip"
    why: str = ""

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(pages: list[Path] = PAGES) -> list[Block]:
    """Every fenced block of the pages, with the marker on the line above it (if any)."""
    out = []
    for page in pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            start = FENCE.match(lines[i])
            if start is None:
                i += 1
                continue
            indent, body = len(start["indent"]), []
            j = i + 1
            while j < len(lines) and not re.match(rf"^ {{{indent}}}```\s*$", lines[j]):
                body.append(lines[j][indent:])
                j += 1
            above = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            marker = MARKER.match(above)
            fate = "default" if marker is None else ("slow" if marker["what"] == "slow" else "skip")
            out.append(Block(page, i + 1, start["lang"], "\n".join(body) + "\n", fate,
                             (marker["why"] or "") if marker else ""))
            i = j + 1
    return out


ALL = blocks()
RUN = [b for b in ALL if b.lang in RUNNABLE]


def _ids(items: list[Block]) -> list[str]:
    return [b.id for b in items]


def test_every_block_has_a_language_and_every_runnable_block_a_fate():
    """An unlabelled block would escape the checks below; a skip must say what the block needs."""
    for block in ALL:
        assert block.lang in LANGUAGES, f"{block.id}: fence language {block.lang!r} (one of {sorted(LANGUAGES)})"
        if block.lang not in RUNNABLE:
            assert block.fate == "default", f"{block.id}: a {block.lang} block is never run; drop its docs-test mark"
        if block.fate == "skip":
            assert len(block.why.split()) >= 3, f"{block.id}: say in the skip line what the block needs"
    assert {b.fate for b in RUN} >= {"default", "slow", "skip"}
    for page in PAGES:  # a misspelt marker would silently leave a block to the default suite
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            if "docs-test" in line and line.lstrip().startswith("<!--"):
                assert MARKER.match(line), f"{page.relative_to(ROOT)}:{n}: not a docs-test marker: {line.strip()}"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EASYINV_", "MAKE"))}
    return env | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                  "PATH": f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"} | extra


# Each Python block runs with fresh globals, all of a run in one child process (a block may declare a metric or put
# a folder on sys.path: nothing of it reaches this process), stopping at the first failure with its place.
RUNNER = textwrap.dedent("""
    import json, sys, traceback
    for place, code in json.load(sys.stdin):
        try:
            exec(compile(code, place, "exec"), {"__name__": "__main__"})
        except BaseException:
            print(f"FAILED {place}", file=sys.stderr)
            traceback.print_exc()
            sys.exit(1)
        print(f"ran {place}")
""")


def _run_python(items: list[Block], cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    payload = json.dumps([[b.id, b.code] for b in items])
    return subprocess.run([sys.executable, "-c", RUNNER], input=payload, cwd=cwd, capture_output=True, text=True,
                          env=_env(PYTHONPATH=str(pythonpath)), timeout=900)


def test_python_blocks_of_the_default_suite_run(tmp_path):
    items = [b for b in RUN if b.lang == "python" and b.fate == "default"]
    assert items, "no Python block runs in the default suite"
    done = _run_python(items, tmp_path, ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("ran ") == len(items)


def _bash(code: str, cwd: Path, pythonpath: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, capture_output=True, text=True,
                          env=_env(PYTHONPATH=str(pythonpath)), timeout=timeout)


@pytest.mark.parametrize("block", [b for b in RUN if b.lang == "bash" and b.fate == "default"],
                         ids=_ids([b for b in RUN if b.lang == "bash" and b.fate == "default"]))
def test_bash_blocks_of_the_default_suite_run(block, tmp_path):
    done = _bash(block.code, ROOT, ROOT, timeout=60)
    assert done.returncode == 0, f"{block.id}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


# ---- the slow set: in a fresh clone, the make targets at the sizes tests/test_make_targets.py runs them -------------


# beside tests/test_make_targets.py's sizes: the two demos that test runs in full already
DOCS_SMALL_ARGS = {"demo": "dataset.limit=2", "editing-demo-flow": "dataset.limit=1"}


def _make_shim() -> str:
    """A ``make`` function for the blocks: never reinstall into this environment (``-o``), use it (``VENV=``), and
    pass the small ``ARGS`` of tests/test_make_targets.py to a target that has some, unless the line gives its own."""
    from test_make_targets import SMALL_ARGS

    table = " ".join(f"[{t}]={shlex.quote(a)}" for t, a in (SMALL_ARGS | DOCS_SMALL_ARGS).items())
    return textwrap.dedent(f"""
        declare -A SMALL=({table})
        make() {{
          local target=$1 extra=()
          if [[ -n "${{SMALL[$target]:-}}" && "$*" != *ARGS=* ]]; then extra=("ARGS=${{SMALL[$target]}}"); fi
          command make --no-print-directory -o {shlex.quote(str(VENV))}/.installed VENV={shlex.quote(str(VENV))} \\
            "$@" "${{extra[@]}}"
        }}
    """)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    dest = tmp_path_factory.mktemp("docs") / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=120)
    return dest


def _console(block: Block) -> list[tuple[str, list[str]]]:
    """(command, the lines shown under it) of each ``$`` line."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip():
            assert steps, f"{block.id}: output before the first $ line"
            steps[-1][1].append(line.strip())
    return steps


SLOW = [b for b in RUN if b.fate == "slow"]


@pytest.mark.slow
@pytest.mark.parametrize("block", SLOW, ids=_ids(SLOW))
def test_slow_blocks_run_in_a_fresh_clone(block, clone):
    if block.lang == "python":
        done = _run_python([block], clone, clone)
        assert done.returncode == 0, done.stderr[-4000:]
        return
    if block.lang == "bash":
        done = _bash(_make_shim() + block.code, clone, clone)
        assert done.returncode == 0, f"{block.id}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return
    for command, shown in _console(block):
        done = _bash(command, clone, clone)
        printed = {line.strip() for line in (done.stdout + done.stderr).splitlines()}
        for line in shown:
            assert line in printed, f"{block.id}: `{command}` did not print {line!r}; it printed:\n{sorted(printed)}"


# ---- what the pages say, checked against the code and the committed results ----------------------------------------


def test_every_config_key_has_a_comment():
    """The configuration reference is generated from configs/; a key with no comment (its own, or the one its group
    writes for the same key) would be a row that says nothing."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from config_reference import choices, markdown, missing
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert missing() == [], "keys without a comment:\n" + "\n".join(missing())
    text = markdown()
    for choice in choices():
        for key in choice.keys:
            assert f"| `{key.path}` |" in text or key.mapping, (choice.file, key.path)
    assert "| `method.eta` |" not in text and "### `method=easyinv`" in text and "| `eta` |" in text


def _sources() -> str:
    """The code, Makefile and scripts as one text, adjacent string literals joined (a message split over lines)."""
    files = [*ROOT.glob("easyinv/**/*.py"), *ROOT.glob("baselines/*.py"), *ROOT.glob("scripts/*"), ROOT / "Makefile"]
    text = "\n".join(f.read_text(encoding="utf-8") for f in files if f.is_file())
    return re.sub(r"\"\s*\n\s*f?\"", "", text)


def test_every_troubleshooting_message_is_in_the_code():
    page = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(rows) >= 25
    sources = _sources()
    for row in rows:
        message = row.split("`")[1]
        fragments = [f for f in message.split("…") if len(f.strip()) >= 8]
        assert fragments, row
        for fragment in fragments:
            assert fragment.strip() in sources, f"troubleshooting.md: {fragment!r} is in no message ({row[:80]})"


def _table(text: str, header: str) -> list[str]:
    """The rows of the first Markdown table whose header row starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


@pytest.mark.parametrize(("page", "result", "header"), [
    ("README.md", "results/demo/table1.md", "| Method | n | LPIPS"),
    ("docs/getting-started.md", "results/demo/table1.md", "| Method | n | LPIPS"),
    ("docs/sweeps.md", "results/sweep_easyinv/sweep.md", "| method | precision |"),
    ("docs/editing.md", "results/editing_demo_flow/editing.md", "| Protocol | Model |"),
])
def test_the_tables_the_pages_show_are_the_committed_results(page, result, header):
    """A demo table on a page is the committed run's table (written by the run; `make demo-reference` and the demos
    rewrite the files), row for row, so the page cannot drift from what the code produces."""
    shown = _table((ROOT / page).read_text(encoding="utf-8"), header)
    written = _table((ROOT / result).read_text(encoding="utf-8"), header)
    assert len(shown) > 3 and shown == written


# ---- the site -------------------------------------------------------------------------------------------------------


def build_site(dest: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of this checkout into ``dest`` (what ``make docs`` runs)."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(dest)],
                          cwd=ROOT, capture_output=True, text=True, env=_env(NO_MKDOCS_2_WARNING="1",
                                                                             PYTHONPATH=str(ROOT)), timeout=600)


EXTERNAL = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.IGNORECASE)


@pytest.mark.slow
def test_the_site_builds_strict_and_loads_nothing_from_outside(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is missing (pip install -e '.[docs]')")
    done = build_site(tmp_path / "site")
    assert done.returncode == 0, done.stderr[-4000:]
    pages = sorted((tmp_path / "site").rglob("*.html"))
    assert len(pages) >= 15
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert not EXTERNAL.search(html), f"{page.name} loads {EXTERNAL.search(html)[0]}"
        assert "fonts.googleapis" not in html
    reference = (tmp_path / "site" / "configuration.html").read_text(encoding="utf-8")
    assert "exclude_keys" in reference and "docs-test" not in reference.split("Reference: every group")[1]
    assert "easyinv.registry.make_method" in (tmp_path / "site" / "modules.html").read_text(encoding="utf-8")
