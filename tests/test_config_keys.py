"""The keys that change no record's numbers are one list: configs/config.yaml's ``override_dirname.exclude_keys`` (left
out of a run directory's name), from which ``records.HASH_EXCLUDE`` (left out of the config hash) is derived with an
explicit, commented difference (``records.HASH_ONLY``). Config hashes of existing runs do not move."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from easyinv.run.records import HASH_EXCLUDE, HASH_ONLY, config_hash, hash_exclude
from easyinv.validation import CONFIG_DIR, dirname_exclude_keys, group_choices

ROOT = Path(__file__).resolve().parent.parent

# records.HASH_EXCLUDE as it was written by hand before it was derived (the hashes of every existing run directory)
HAND_WRITTEN = (
    "paths", "hydra", "experiment", "experiment_name", "device", "batch_size", "save_png", "png_limit", "save_latents",
    "report_dir", "reference_dir", "figures_dir", "report", "objective", "shard", "dataset.limit", "dataset.offset",
    "dataset.root", "dataset.manifest", "dataset.hash_files", "model.load.source", "model.load.cache_dir",
    "model.compile", "model.channels_last", "precision.fallback", "metrics.lpips.trunk_path",
    "edit_metrics.dino.path", "edit_metrics.clip.path", "edit_metrics.lpips.trunk_path", "model.editing", "job",
)


def _minimal(keys) -> set[str]:
    """The keys that prune a config: a key under another listed key prunes nothing more."""
    keys = set(keys)
    return {k for k in keys if not any(k.startswith(f"{p}.") for p in keys)}


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def _leaves(node, prefix: str) -> set[str]:
    if not OmegaConf.is_dict(node):
        return {prefix}
    return set().union(*(_leaves(node[k], f"{prefix}.{k}") for k in node)) if len(node) else {prefix}


def test_hydra_uses_the_list_the_hash_is_derived_from():
    cfg = _compose(hydra=True)
    assert tuple(cfg.hydra.job.config.override_dirname.exclude_keys) == dirname_exclude_keys()
    assert set(dirname_exclude_keys()) <= set(HASH_EXCLUDE)  # left out of the name, so left out of the hash
    assert hash_exclude() == HASH_EXCLUDE


def test_the_hash_list_follows_the_yaml_list(tmp_path):
    configs = shutil.copytree(CONFIG_DIR, tmp_path / "configs")
    text = (configs / "config.yaml").read_text()
    assert "exclude_keys: [experiment," in text
    (configs / "config.yaml").write_text(text.replace("exclude_keys: [experiment,", "exclude_keys: [seed, experiment,"))
    assert "seed" in dirname_exclude_keys(configs)
    assert "seed" in hash_exclude(configs) and "seed" not in HASH_EXCLUDE
    assert set(HASH_ONLY) <= set(hash_exclude(configs))


def test_the_hash_leaves_out_exactly_what_it_did():
    """... and the tracking group's tree, added with it: no run before it had a ``tracking`` key to hash."""
    assert _minimal(HASH_EXCLUDE) == _minimal((*HAND_WRITTEN, "tracking"))


def test_the_name_lists_every_key_of_the_trees_the_hash_leaves_out_whole():
    """HASH_ONLY's whole trees (paths, report, shard) are left out of the name key by key: a command line sets
    leaves, and Hydra compares override keys exactly. A key added to one of these trees must join the name's list."""
    cfg = _compose("experiment=demo")
    named = set(dirname_exclude_keys())
    for tree in ("paths", "report", "shard"):
        assert tree in HASH_ONLY
        missing = _leaves(cfg[tree], tree) - named
        assert not missing, f"add {sorted(missing)} to configs/config.yaml's override_dirname.exclude_keys"
    for option in group_choices("tracking"):  # the tracking tree is named whole (`tracking=mlflow`) and key by key
        missing = _leaves(_compose(f"tracking={option}").tracking, "tracking") - named
        assert "tracking" in named and not missing, f"add {sorted(missing)} to the exclude_keys"


def test_no_tracking_key_changes_a_config_hash_or_a_run_directory():
    """Tracking is a window on the records: turning it on, or pointing it elsewhere, leaves the demo's hashes and
    run directories as they were."""
    def resolved(*overrides):
        cfg = _compose("experiment=demo", "method=ddim", *overrides)
        dirname = _compose("experiment=demo", "method=ddim", *overrides, hydra=True).hydra.job.override_dirname
        return config_hash(OmegaConf.to_container(cfg, resolve=True)), dirname

    plain = resolved()
    assert resolved("tracking=mlflow", "tracking.uri=http://127.0.0.1:5000", "tracking.experiment=x") == plain
    assert resolved("tracking=wandb", "tracking.mode=online", "tracking.project=p", "tracking.entity=e") == plain
    assert plain[1] == "method=ddim"


def test_the_demo_config_hashes_are_the_committed_ones():
    """results/demo/table1.csv was written by `make demo-reference`: each method's config hash is recomputed."""
    with open(ROOT / "results" / "demo" / "table1.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    for row in rows:
        cfg = _compose("experiment=demo", f"method={row['method']}", "paths.root=/elsewhere", "batch_size=4")
        assert config_hash(OmegaConf.to_container(cfg, resolve=True)) == row["config_hash"], row["method"]
