"""bench/accuracy.py's arms: each is the recipe with only its own component changed, so
the ablation table in docs/PERFORMANCE.md compares like with like."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from deepspeech_core.config import PipelineConfig

BENCH = Path(__file__).resolve().parents[1] / "bench" / "accuracy.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(bench, arm: str, tmp_path: Path, **overrides) -> PipelineConfig:
    values = {"n_hidden": 256, "epochs": 40, "batch_size": 32, "seed": 1}
    args = argparse.Namespace(workdir=tmp_path, corpus=tmp_path, **{**values, **overrides})
    return PipelineConfig.model_validate(bench.arm_config(arm, args)).resolved()


def _differences(cfg: PipelineConfig, recipe: PipelineConfig) -> set[str]:
    fields = {
        f"{section}.{name}"
        for section in ("model", "training")
        for name in type(getattr(cfg, section)).model_fields
        if getattr(getattr(cfg, section), name) != getattr(getattr(recipe, section), name)
    }
    return fields - {"training.checkpoint_dir"}


@pytest.mark.parametrize(
    ("arm", "changed"),
    [
        ("baseline", None),
        ("no_feature_norm", {"model.feature_norm"}),
        ("no_speed", {"training.augment"}),
        ("no_masks", {"training.augment"}),
        ("dropout_0.05", {"model.dropout_rate"}),
        ("no_early_stop", {"training.early_stop", "training.reduce_lr_on_plateau"}),
        ("pitch_tempo", {"training.augment"}),
        ("speed_pitch_tempo", {"training.augment"}),
        ("no_volume", {"training.augment"}),
        ("dev_loss_selection", {"training.best_metric"}),
    ],
)
def test_each_arm_changes_only_its_component(arm, changed, tmp_path):
    bench = _bench()
    assert arm in bench.ARMS
    recipe = _config(bench, "recipe", tmp_path)
    cfg = _config(bench, arm, tmp_path)
    assert recipe.training.recipe == "small_data"
    if changed is None:  # DeepSpeech's defaults: no recipe at all
        assert cfg.training.recipe == "none" and not cfg.training.augment
        assert not cfg.model.feature_norm and not cfg.training.early_stop
    else:
        assert _differences(cfg, recipe) == changed
    augment = cfg.training.augment
    assert any(a.startswith("speed") for a in augment) == (
        arm not in ("no_speed", "pitch_tempo", "baseline")
    )
    assert any(a.startswith("time_mask") for a in augment) == (arm not in ("no_masks", "baseline"))
    assert any(a.startswith("volume") for a in augment) == (arm not in ("no_volume", "baseline"))


def test_runs_differing_in_seed_or_epochs_train_in_their_own_directories(tmp_path):
    bench = _bench()
    dirs = {
        _config(bench, "recipe", tmp_path, **change).training.checkpoint_dir
        for change in ({}, {"seed": 2}, {"epochs": 20}, {"n_hidden": 512})
    }
    assert len(dirs) == 4
