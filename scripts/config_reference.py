"""The configuration reference of the documentation site, read from ``configs/`` itself so that it cannot go stale.

Every group, every choice (one YAML file), and every key of it with its default and its comment: the comment written
on the key's line (and on the comment lines aligned under it), or on the comment lines just above it. The docs build
renders it into ``docs/configuration.md`` (the ``docs/hooks.py`` hook); ``tests/test_docs.py`` fails when a key has
no comment, so a new key arrives documented.

    python scripts/config_reference.py            # the Markdown, as the site shows it
    python scripts/config_reference.py --missing  # the keys without a comment (exit 1 when there are any)
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.\-]*)\s*:(?:\s+(?P<rest>.*))?$")


@dataclass
class Key:
    """One key of one config file: its dotted path, its default as written, and its comment."""

    path: str
    default: str
    comment: str
    line: int
    mapping: bool = False


@dataclass
class Choice:
    """One YAML file of a group: what its header says, its defaults list and its keys."""

    group: str
    name: str
    file: Path
    header: str = ""
    global_package: bool = False
    defaults: list[str] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)


def _split_comment(text: str) -> tuple[str, str]:
    """``value  # comment`` → (value, comment); a ``#`` inside quotes or not preceded by a space is the value's."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1:].strip()
    return text.rstrip(), ""


def _comment_column(line: str) -> int:
    """Column of the ``#`` that starts the line's trailing comment; -1 without one."""
    value, comment = _split_comment(line)
    return line.index("#", len(value)) if comment or line.rstrip().endswith("#") else -1


def _lookup(data: object, path: list[str]) -> object:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _default(raw: str, value: object) -> str:
    """The default as the YAML writes it, or the parsed value where the text spans lines (a long flow list)."""
    if isinstance(value, dict):
        return ""
    try:
        if raw and yaml.safe_load(raw) == value:
            return raw
    except yaml.YAMLError:
        pass
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def parse(file: Path, group: str) -> Choice:
    """Read one config file line by line, keeping the comments that ``yaml.safe_load`` drops."""
    text = file.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    choice = Choice(group=group, name=file.stem, file=file)
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    pending: list[str] = []  # comment lines above the next key
    last: Key | None = None  # the key (or defaults entry) a comment line aligned under its comment continues
    last_column = last_indent = -1  # where the last key's comment starts, and the key's own indentation
    in_header, in_defaults = True, False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            in_header, pending, last = False, [], None
            continue
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if in_header:
                if body.startswith("@package _global_"):
                    choice.global_package = True
                else:
                    choice.header += (" " if choice.header else "") + body
            elif last is not None and last_column >= 0 and line.index("#") > last_indent:
                if in_defaults and choice.defaults:
                    choice.defaults[-1] += " " + body
                else:
                    last.comment += " " + body
            else:
                pending.append(body)
                last = None
            continue
        in_header = False
        if stripped.startswith("- "):
            if in_defaults:
                entry, comment = _split_comment(stripped[2:])
                choice.defaults.append(f"{entry}" + (f" — {comment}" if comment else ""))
                last, last_column = Key("defaults", "", "", number), _comment_column(line)
                last_indent = len(line) - len(line.lstrip())
            continue
        match = KEY_LINE.match(line)
        if match is None:  # the continuation of a flow list or a block scalar
            continue
        indent, key = len(match["indent"]), match["key"]
        raw, comment = _split_comment(match["rest"] or "")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        in_defaults = key == "defaults" and not stack
        if in_defaults:
            pending, last = [], None
            continue
        parts = [k for _, k in stack] + [key]
        comment = " ".join([*pending, comment]).strip()
        value = _lookup(data, parts)
        entry = Key(".".join(parts), _default(raw, value), comment, number, mapping=isinstance(value, dict))
        choice.keys.append(entry)
        pending = []
        last, last_column, last_indent = entry, _comment_column(line), indent
        if not raw:
            stack.append((indent, key))
    return choice


def choices(root: Path = CONFIGS) -> list[Choice]:
    """Every config file under ``root`` (the primary config first, then the groups in order), parsed."""
    files = sorted(root.rglob("*.yaml"), key=lambda f: (f.parent != root, f.relative_to(root).as_posix()))
    out = []
    for file in files:
        group = file.parent.relative_to(root).as_posix()
        if group.split("/")[0] == "local":  # git-ignored machine paths (configs/local/README.md)
            continue
        out.append(parse(file, "" if group == "." else group))
    return out


def _documented(all_choices: list[Choice]) -> dict[tuple[str, str], str]:
    """(group, dotted key) → the first comment written for it anywhere in that group; the primary config's keys under
    group "" (a key's meaning is written once, in the group's first file that comments it, and read from there)."""
    known: dict[tuple[str, str], str] = {}
    for choice in all_choices:
        for key in choice.keys:
            if key.comment:
                known.setdefault((choice.group, key.path), key.comment)
    return known


def _generated(path: str) -> str:
    """What a Hydra setting of a preset means, said once here for every preset that uses it."""
    if path.startswith("hydra.sweeper.params."):
        return f"swept: one job per comma-separated value of `{path.removeprefix('hydra.sweeper.params.')}`"
    if path == "hydra.mode":
        return "MULTIRUN: the preset is a sweep (as with `-m`), one job per combination of the swept values"
    if path == "_target_" or path.endswith("._target_"):
        return "the class Hydra builds from these keys"
    return ""


def comment_for(choice: Choice, key: Key, known: dict[tuple[str, str], str]) -> str:
    """The key's own comment, else the one its group (or, in a global preset, the primary config or the key's own
    group) writes for the same key, else the generated one for a Hydra setting; "" when there is none."""
    if key.comment:
        return key.comment
    candidates = [(choice.group, key.path)]
    if choice.global_package:
        head, _, rest = key.path.partition(".")
        candidates += [("", key.path), (head, rest)]
    for candidate in candidates:
        if candidate in known:
            return known[candidate]
    return _generated(key.path)


def missing(root: Path = CONFIGS) -> list[str]:
    """``file:line key`` of every key with a value but no comment, neither its own nor one its group writes for the
    same key (the test's list; empty when every key is documented). A mapping's keys carry its comments."""
    all_choices = choices(root)
    known = _documented(all_choices)
    return [f"{c.file.relative_to(root.parent)}:{k.line} {k.path}" for c in all_choices for k in c.keys
            if not k.mapping and not comment_for(c, k, known)]


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def _code(text: str) -> str:
    if not text:
        return ""
    return f"<code>{text.replace('&', '&amp;').replace('<', '&lt;').replace('|', '&#124;')}</code>"


def markdown(root: Path = CONFIGS) -> str:
    """The reference as Markdown: a section per group, a subsection per choice, a table of its keys."""
    lines: list[str] = []
    current = None
    all_choices = choices(root)
    known = _documented(all_choices)
    for choice in all_choices:
        if choice.group != current:
            current = choice.group
            title = f"`{current}/`" if current else "`config.yaml` (the primary config)"
            lines += ["", f"## {title}", ""]
        rel = choice.file.relative_to(root.parent).as_posix()
        if choice.group:
            lines += [f"### `{choice.group}={choice.name}`", ""]
        lines += [f"`{rel}`" + (" (`@package _global_`: its keys are top-level keys)" if choice.global_package
                                else ""), ""]
        if choice.header:
            lines += [_cell(choice.header), ""]
        if choice.defaults:
            lines += ["Defaults list:", ""] + [f"- {_cell(d)}" for d in choice.defaults] + [""]
        if choice.keys:
            lines += ["| key | default | comment |", "|---|---|---|"]
            for key in choice.keys:
                comment = comment_for(choice, key, known)
                if key.mapping and not comment:
                    continue
                lines.append(f"| `{key.path}` | {_code(key.default)} | {_cell(comment)} |")
            lines.append("")
    return "\n".join(lines).lstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--missing", action="store_true", help="list the keys without a comment")
    args = parser.parse_args(argv)
    if args.missing:
        keys = missing()
        print("\n".join(keys) or "every key has a comment")
        return 1 if keys else 0
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
