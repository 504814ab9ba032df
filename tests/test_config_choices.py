"""configs/config.yaml's defaults list names each group's choices in a comment: every name there is a file of the group
(a renamed or removed config cannot leave a stale name behind)."""

from __future__ import annotations

import re

from easyinv.validation import CONFIG_DIR, group_choices


def _listed_choices() -> dict[str, list[str]]:
    """``group -> names`` from the ``  - group: default  # a | b (note) | c`` comments (continued on ``#`` lines)."""
    listed: dict[str, str] = {}
    group = None
    for line in (CONFIG_DIR / "config.yaml").read_text().splitlines():
        entry = re.match(r"  - (?:optional )?([\w/]+): [^#]*#(.*)", line)
        if entry:
            group = entry.group(1)
            listed[group] = entry.group(2)
        elif group and re.match(r"\s+#", line):
            listed[group] += " " + line.split("#", 1)[1]
        else:
            group = None
    return {g: [re.match(r"\s*\(?([\w-]+)", piece).group(1) for piece in text.split("|")]
            for g, text in listed.items() if "|" in text}


def test_every_choice_named_in_config_yaml_is_a_file_of_its_group():
    listed = _listed_choices()
    assert {"model", "method", "precision", "dataset", "job", "edit", "experiment"} <= set(listed)
    for group, names in listed.items():
        stale = set(names) - set(group_choices(group))
        assert not stale, f"configs/config.yaml names {sorted(stale)} in the {group} group, which has no such file"
