"""Every editor of the ``edit`` config group, found from its YAML (no list to edit), tested by the test kit a
plugin's repository runs on its own editor (easyinv.testing.EditorContract; one ``TestEditor_<name>`` class per
YAML): on each tiny model it serves it runs one mini PIE-Bench image through the editing job at its paper's defaults
(its own inversion), with NFE accounted as the sum of its phases, or it is refused in one line before any weight
loads (``Editor.unsupported``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from easyinv.testing import EditorContract
from easyinv.validation import CONFIG_DIR

EDITORS = sorted(p.stem for p in (Path(CONFIG_DIR) / "edit").glob("*.yaml"))


class TinyModels:
    """The built-in editors need real networks (a UNet's attention, FLUX's blocks): the tiny random models."""

    models = ("tiny-sd", "tiny-flux", "tiny-sd3")

    @pytest.fixture(scope="class")
    @classmethod
    def edit_cache(cls, tiny_model_cache: Path) -> Path:
        return tiny_model_cache


for _editor in EDITORS:
    globals()[f"TestEditor_{_editor}"] = type(f"TestEditor_{_editor}", (TinyModels, EditorContract),
                                              {"editor": _editor})


def test_the_edit_group_is_found():
    assert {"p2p", "masactrl", "v_inject", "uni_edit", "rf_inversion", "flowedit"} <= set(EDITORS)
