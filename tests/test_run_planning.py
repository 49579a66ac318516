"""The decisions the train-cv flow applies, made by the core and tested without Prefect.

Which checkpoint directory a run uses (including a work directory of the older layout,
one training directly in `checkpoints/`), when a new training warm-starts from the
exported model, whether the current export is already this training's checkpoint, which
alphabet validation keeps, and which stages a target includes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deepspeech_core.config import STAGES, PipelineConfig, runs_stage
from deepspeech_core.export import store
from deepspeech_core.export.promotion import is_already_current
from deepspeech_core.manifests import EvaluationManifest, FeatureCacheManifest
from deepspeech_core.train.trainings import (
    NoTrainedModelError,
    alphabet_for,
    checkpoint_dir_for,
    resolve_trainings_roots,
    run_checkpoint_dir,
    warm_start_source,
    with_training,
)

pytestmark = pytest.mark.unit  # `make test-fast`


def _fake_training(path: Path) -> Path:
    """A directory `has_trained_model` accepts: a model description and a checkpoint."""
    (path / "train").mkdir(parents=True)
    (path / "model.json").write_text("{}")
    (path / "train" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    return path


def _features(tmp_path: Path, transcript: str = "one two") -> FeatureCacheManifest:
    index = tmp_path / f"train-{transcript.replace(' ', '_')}.csv"
    index.write_text(f"content_hash,transcript\nabc123,{transcript}\n")
    return FeatureCacheManifest(
        cache_dir=tmp_path,
        namespace="ns",
        indexes={"train": index},
        alphabet_path=tmp_path / "alphabet.txt",
        counts={"train": 1},
        computed=0,
        reused_clips=1,
        fingerprint="f",
    )


def _config(tmp_path: Path, **training) -> PipelineConfig:
    config = PipelineConfig.model_validate({"workdir": str(tmp_path / "work")}).resolved()
    return with_training(config, **training)


def _export(config: PipelineConfig, checkpoint: str) -> Path:
    version = config.export_dir / "v1"
    (version / "checkpoint").mkdir(parents=True)
    (version / "metadata.json").write_text(json.dumps({"checkpoint": checkpoint}))
    (version / "alphabet.txt").write_text("a\n")
    store.promote(config.export_dir, version)
    return version


def test_a_target_runs_the_stages_up_to_it_in_order():
    assert runs_stage("export", "validate")
    assert runs_stage("train", "train")
    assert not runs_stage("features", "train")
    assert [s for s in STAGES if runs_stage("train", s)] == ["validate", "features", "train"]


def test_a_training_per_data_under_the_default_root(tmp_path):
    config = _config(tmp_path)
    features = _features(tmp_path)
    own = checkpoint_dir_for(config.workdir / "checkpoints", features)

    assert run_checkpoint_dir(config, features, reuse_trained_model=False) == own
    grown = _features(tmp_path, "one two three")
    assert run_checkpoint_dir(config, grown, reuse_trained_model=False) != own, (
        "other training data is another training"
    )


def test_the_older_layout_one_training_directly_in_checkpoints_is_used_as_it_is(tmp_path):
    config = _config(tmp_path)
    root = _fake_training(config.workdir / "checkpoints")

    assert run_checkpoint_dir(config, _features(tmp_path), reuse_trained_model=False) == root


def test_a_user_checkpoint_dir_that_is_a_training_is_kept(tmp_path):
    mine = tmp_path / "mine"
    config = _config(tmp_path, checkpoint_dir=mine)

    assert run_checkpoint_dir(config, _features(tmp_path), reuse_trained_model=False) == mine


def test_reusing_a_model_without_training_data_takes_the_newest_training(tmp_path):
    config = _config(tmp_path)
    newest = _fake_training(config.workdir / "checkpoints" / "other")

    chosen = run_checkpoint_dir(config, _features(tmp_path), reuse_trained_model=True)

    assert chosen == newest


def test_reusing_a_model_where_there_is_none_fails_before_any_work(tmp_path):
    config = _config(tmp_path)

    with pytest.raises(NoTrainedModelError, match="no trained model in .*Train one first"):
        resolve_trainings_roots(config, reuse_trained_model=True)
    assert resolve_trainings_roots(config, reuse_trained_model=False) == config


def test_a_new_training_warm_starts_from_the_current_export_only(tmp_path):
    config = _config(tmp_path)
    assert warm_start_source(config, "current") is None, "no export yet: from scratch"

    version = _export(config, "/somewhere/best/ckpt-3")
    new = with_training(config, checkpoint_dir=config.workdir / "checkpoints" / "new")
    assert warm_start_source(new, "current") == version / "checkpoint"
    assert warm_start_source(new, "scratch") is None
    transfer = with_training(new, load_checkpoint_dir=tmp_path / "other-model")
    assert warm_start_source(transfer, "current") is None, "--load_checkpoint_dir wins"
    resumed = with_training(config, checkpoint_dir=_fake_training(tmp_path / "resumed"))
    assert warm_start_source(resumed, "current") is None, "a resumed training keeps its weights"


def test_the_current_export_of_the_evaluated_checkpoint_is_nothing_new(tmp_path):
    config = _config(tmp_path)
    version = _export(config, "/w/checkpoints/x/best/ckpt-3")

    def evaluated(checkpoint: str) -> EvaluationManifest:
        return EvaluationManifest(
            wer=0.5,
            cer=0.2,
            loss=1.0,
            samples=4,
            report_path=tmp_path / "r.json",
            test_output_path=tmp_path / "o.json",
            checkpoint=Path(checkpoint),
        )

    assert is_already_current(version, evaluated("/w/checkpoints/x/best/ckpt-3"))
    assert not is_already_current(version, evaluated("/w/checkpoints/x/best/ckpt-4"))
    assert not is_already_current(None, evaluated("/w/checkpoints/x/best/ckpt-3"))
    (version / "metadata.json").write_text("not json")
    assert not is_already_current(version, evaluated("/w/checkpoints/x/best/ckpt-3"))


def test_the_alphabet_of_the_model_a_run_continues(tmp_path):
    config = _config(tmp_path)
    assert alphabet_for(config) is None, "a training from scratch derives its own"

    version = _export(config, "/w/ckpt")
    assert alphabet_for(config) == version / "alphabet.txt"
    assert alphabet_for(config, from_current_export=False) is None

    mine = tmp_path / "mine.txt"
    mine.write_text("b\n")
    given = config.model_copy(
        update={"corpus": config.corpus.model_copy(update={"alphabet_config_path": mine})}
    )
    assert alphabet_for(given) == mine, "--alphabet_config_path wins"


def test_the_run_decisions_import_no_prefect():
    code = (
        "import sys, deepspeech_core.train.trainings, deepspeech_core.export.promotion\n"
        "assert 'prefect' not in sys.modules, sorted(m for m in sys.modules if 'prefect' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
