"""``EditorContract``: the checks every editor of the harness passes, as a mixin a test class subclasses.

For an editor config (``configs/edit/<name>.yaml`` or a plugin's) and a list of models, the editing job is built on
each model: the editor either serves it or refuses it in one line before anything runs (``Editor.unsupported``, or
its inversion method's refusal); it serves at least one; on the first it serves, one image of the generated mini
PIE-Bench is edited at the editor's defaults (its own inversion method), the record says ``ok``, its NFE is the sum
of its phases (inversion, DirectInversion's offsets, edit) and the structure distance and PSNR are measured.

By default the models are the closed-form Gaussian ones (``gaussian``, ``gaussian_flow``: offline, seconds); an
editor that needs a real network (attention editors need a UNet) names tiny models in ``models`` and overrides the
``edit_cache`` fixture with a folder that holds them (the harness's own tests: ``tiny_model_cache``). The edit
metrics are tiny random networks here (``edit_metrics.random_for_tests``): their values say that the pipeline runs,
not how well anything edits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from hydra import compose, initialize_config_dir

from easyinv.editing.editor import Editor
from easyinv.plugins import register_search_path
from easyinv.validation import CONFIG_DIR, ConfigError

__all__ = ["EditorContract"]


class EditorContract:
    """Subclass as ``class TestMyEditor(EditorContract): editor = "my_editor"``.

    ``editor``: the editor's config name. ``models``: the model configs to try, in order (the first it serves runs).
    ``overrides``: more Hydra overrides for every job (e.g. ``model.resolution=32``). ``config_dir``: the config
    folder (default: the harness's, plugins included)."""

    editor: ClassVar[str | None] = None
    models: ClassVar[tuple[str, ...]] = ("gaussian_flow", "gaussian")
    overrides: ClassVar[tuple[str, ...]] = ()
    config_dir: ClassVar[Path | str | None] = None

    @pytest.fixture(scope="class")
    @classmethod
    def edit_cache(cls, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The ``paths.cache`` of the jobs (where the mini PIE-Bench is written; tiny models are looked up)."""
        return tmp_path_factory.mktemp("easyinv-edit-cache")

    @classmethod
    def compose(cls, root: Path, cache: Path, model: str) -> Any:
        """The editing job's config for ``model``: this editor at its defaults, one mini PIE-Bench image, CPU."""
        if cls.editor is None:
            raise TypeError(f"{cls.__name__}: set `editor = <config name>`")
        config_dir = Path(cls.config_dir) if cls.config_dir is not None else Path(CONFIG_DIR)
        register_search_path()  # an installed plugin's editor composes as on the command line
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            return compose("config", overrides=["experiment=editing_demo_flow", f"paths.root={root}",
                                                f"paths.cache={cache}", "dataset.limit=1", f"edit={cls.editor}",
                                                f"model={model}", *cls.overrides])

    @pytest.fixture(scope="class")
    @classmethod
    def jobs(cls, tmp_path_factory: pytest.TempPathFactory, edit_cache: Path) -> dict[str, Any]:
        """Model → the editing job built on it, or the ``ConfigError`` that refused it."""
        from easyinv.run.editing import EditJob

        root = tmp_path_factory.mktemp(f"edit-{cls.editor}")
        built: dict[str, Any] = {}
        for model in cls.models:
            cfg = cls.compose(root, edit_cache, model)
            try:
                built[model] = EditJob(cfg, root / "runs" / model)
            except ConfigError as refusal:
                built[model] = refusal
        return built

    def test_the_config_builds_an_editor(self, tmp_path: Path, edit_cache: Path) -> None:
        from hydra.utils import instantiate

        cfg = self.compose(tmp_path, edit_cache, self.models[0])
        editor = instantiate(cfg.edit, _convert_="all")
        assert isinstance(editor, Editor), f"edit={self.editor} builds {type(editor).__name__}, not an Editor"
        assert editor.name == self.editor, f"{self.editor}.yaml must say name: {self.editor}"

    def test_it_serves_one_model_and_refuses_the_others_in_one_line(self, jobs: dict[str, Any]) -> None:
        refusals = {m: str(j) for m, j in jobs.items() if isinstance(j, ConfigError)}
        for model, refusal in refusals.items():
            assert refusal and "\n" not in refusal, f"edit={self.editor} model={model}: not one line: {refusal!r}"
        assert len(refusals) < len(jobs), f"edit={self.editor} serves none of {list(self.models)}: {refusals}"

    def test_one_image_is_edited_with_its_nfe_the_sum_of_its_phases(self, jobs: dict[str, Any]) -> None:
        from easyinv.run.records import read_records

        served = [(m, j) for m, j in jobs.items() if not isinstance(j, ConfigError)]
        if not served:
            pytest.fail(f"edit={self.editor} serves none of {list(self.models)}")
        model, job = served[0]  # one run per editor keeps the suite short; the others were built and checked
        job.run()
        rows = read_records(job.run_dir)
        assert len(rows) == 1 and (rows.status == "ok").all(), f"edit={self.editor} model={model}: {rows.get('reason')}"
        parts = rows.nfe_invert + rows.get("nfe_offsets", 0) + rows.nfe_edit
        assert (rows.nfe == parts).all() and (rows.nfe > 0).all(), \
            f"edit={self.editor}: nfe {rows.nfe.tolist()} is not invert + offsets + edit {parts.tolist()}"
        assert rows.structure_distance.notna().all() and rows.psnr.notna().all(), "structure distance and PSNR"
