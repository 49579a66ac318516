"""State a power loss, a full disk or a SIGKILL damaged: healed, or refused with the file
named (issue 11, points 4 and 12)."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from deepspeech_core.config import TrainingConfig
from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.data.validation import validate_corpus
from deepspeech_core.export import store
from deepspeech_core.features.batches import SplitIndex
from deepspeech_core.features.cache import build_feature_cache
from deepspeech_core.model.checkpoints import CheckpointError, load_model
from deepspeech_core.train.loop import train
from deepspeech_core.train.state import CheckpointSaver, CheckpointStateError
from deepspeech_core.workdir import atomic_files
from tests.helpers import tiny_config

REPO = Path(__file__).resolve().parents[1]


def _features_view(manifest) -> dict:
    """Per split: each clip's hash and features, as training reads them."""
    alphabet = Alphabet.load(manifest.alphabet_path)
    view = {}
    for split, path in manifest.indexes.items():
        index = SplitIndex.load(path, alphabet)
        hashes = pd.read_csv(path, dtype=str).content_hash
        view[split] = [(h, index.features(i).tobytes()) for i, h in enumerate(hashes)]
    return view


def _csvs(workdir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((workdir / "corpus").glob("*.csv"))}


def test_damaged_corpus_and_feature_cache_heal_on_the_next_run(tiny_cv, tmp_path):
    cfg = tiny_config(tmp_path / "work", tiny_cv)
    work = cfg.workdir
    corpus = validate_corpus(cfg.corpus, cfg.features, work)
    features = build_feature_cache(corpus, cfg.features, work, shard_size=8)
    csvs, view = _csvs(work), _features_view(features)
    clip = Path(pd.read_csv(corpus.splits["train"]).wav_filename[0])
    clip_bytes = clip.read_bytes()
    shard = sorted((features.cache_dir / "shards").glob("*.npy"))[1]

    # what a power loss after the renames leaves: empty or cut-short files
    (work / "corpus" / "manifest.json").write_bytes(b"")
    clip.write_bytes(b"")
    (features.cache_dir / "manifest.json").write_bytes(b"")
    os.truncate(shard, shard.stat().st_size // 2)

    again = validate_corpus(cfg.corpus, cfg.features, work)
    assert not again.reused
    assert again.counts == corpus.counts
    assert clip.read_bytes() == clip_bytes, "the emptied clip was converted again"
    assert _csvs(work) == csvs
    clip.write_bytes(clip_bytes[:1000])  # cut short behind an intact manifest: seen too
    assert not validate_corpus(cfg.corpus, cfg.features, work).reused
    assert clip.read_bytes() == clip_bytes
    healed = build_feature_cache(again, cfg.features, work, shard_size=8)
    assert 0 < healed.computed <= 8, "only the truncated shard was computed again"
    assert _features_view(healed) == view

    # damage behind a manifest that looks up to date: the shard check still sees it
    os.truncate(shard, 100)
    (features.cache_dir / "index_train.csv").write_bytes(b"")
    rerun = build_feature_cache(again, cfg.features, work, shard_size=8)
    assert 0 < rerun.computed <= 8
    assert _features_view(rerun) == view


def test_checkpoint_state_file_gone_is_refused_not_overwritten(trained, tmp_path):
    cfg, _, features, model = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(cfg.checkpoint_dir, ckpt)
    state = ckpt / "train" / "checkpoint"
    state.unlink()
    before = {p: p.stat().st_mtime_ns for p in ckpt.rglob("ckpt-*")}
    more = cfg.training.model_copy(update={"epochs": cfg.training.epochs + 1})
    with pytest.raises(CheckpointStateError, match="is missing") as info:
        train(features, cfg.model, cfg.features, more, ckpt)
    message = str(info.value)
    assert f"{state} is missing" in message
    assert f"ckpt-{model.steps}" in message
    assert {p: p.stat().st_mtime_ns for p in ckpt.rglob("ckpt-*")} == before, "untouched"

    for damaged in ("", f'model_checkpoint_path: "ckpt-{model.steps}"\n'):  # empty, cut
        state.write_text(damaged)  # named and refused as well
        with pytest.raises(CheckpointStateError, match="is damaged"):
            train(features, cfg.model, cfg.features, more, ckpt)
    best_state = ckpt / "best" / "checkpoint"
    best_text = best_state.read_text()
    best_state.unlink()
    with pytest.raises(CheckpointStateError, match="best"):
        load_model(ckpt, "best")  # evaluate and export say it too
    best_state.write_text(best_text)

    # the lines the message gives restore the training where it was
    state.write_text(message.split(f"into {state}:\n")[1].split("\nor, to")[0] + "\n")
    resumed = train(features, cfg.model, cfg.features, cfg.training, ckpt)
    assert resumed.resumed_from_step == model.steps == resumed.steps


def test_damaged_model_description_or_history_do_not_stop_a_resume(trained, tmp_path):
    cfg, _, features, model = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(cfg.checkpoint_dir, ckpt)
    (ckpt / "model.json").write_bytes(b"")
    (ckpt / "history.json").write_bytes(b'{"train_loss": [1.0, ')
    resumed = train(features, cfg.model, cfg.features, cfg.training, ckpt)
    assert resumed.resumed_from_step == model.steps
    assert load_model(ckpt, "best")[1].model.n_hidden == cfg.model.n_hidden  # rewritten


def test_state_files_are_synced_before_they_count(tmp_path, monkeypatch):
    """fsync of the file, then of its directory after the rename (manifests, checkpoint
    metadata, exports)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(atomic_files.os, "fsync", fsync)
    target = tmp_path / "d" / "manifest.json"
    atomic_files.atomic_write_json(target, {"a": 1})
    assert len(synced) == 2
    assert Path(synced[0]).name.startswith(".manifest.json.")
    assert synced[1] == str(target.parent)

    synced.clear()
    staging, name = store.new_staging(tmp_path / "export")
    (staging / "saved_model").mkdir()
    (staging / "saved_model" / "saved_model.pb").write_bytes(b"x")
    (staging / "metadata.json").write_text("{}")
    version = store.commit(staging, name)
    store.promote(tmp_path / "export", version)
    moved = [s.replace(str(staging), str(version)) for s in synced]
    for path in ("saved_model/saved_model.pb", "metadata.json", "saved_model", ""):
        assert str(version / path).rstrip("/") in moved, path
    assert synced.count(str(tmp_path / "export")) == 2, "after the rename and the promotion"

    synced.clear()
    saver = CheckpointSaver(
        tf.train.Checkpoint(v=tf.Variable(1.0)), tmp_path / "ckpt", TrainingConfig(), []
    )
    saver.save(3)
    saver.save_best(3)
    for sub in ("train", "best"):
        directory = tmp_path / "ckpt" / sub
        for name in ("ckpt-3.index", "ckpt-3.data-00000-of-00001", "checkpoint", ""):
            assert str(directory / name).rstrip("/") in synced, f"{sub}/{name}"


# --- point 12: SIGKILL while a checkpoint is being written ----------------------------

KILL_IN_SAVE = """
import glob, os, signal, sys
from pathlib import Path
from deepspeech_core.train import state as training_state
from deepspeech_core.config import FeatureConfig, ModelConfig, TrainingConfig
from deepspeech_core.manifests import FeatureCacheManifest
from deepspeech_core.train.loop import train

manifest, model, training, ckpt, kill_step, mode = sys.argv[1:]
save = training_state.CheckpointSaver.save

def killed_in_save(self, step):
    if step != int(kill_step):
        return save(self, step)
    if mode == "unlisted":  # files half written, the state file not yet updated
        prefix = self.ckpt.write(os.path.join(self.periodic.directory, f"ckpt-{step}"))
    else:  # "torn": listed in the state file, its data cut short
        prefix = self.periodic.save(checkpoint_number=step)
    data = glob.glob(prefix + ".data-*")[0]
    os.truncate(data, os.path.getsize(data) // 2)
    os.kill(os.getpid(), signal.SIGKILL)

training_state.CheckpointSaver.save = killed_in_save
train(
    FeatureCacheManifest.model_validate_json(manifest),
    ModelConfig.model_validate_json(model),
    FeatureConfig(),
    TrainingConfig.model_validate_json(training),
    Path(ckpt),
)
"""


@pytest.mark.parametrize("mode", ["unlisted", "torn"])
def test_sigkill_during_a_checkpoint_write_then_resume_gives_the_same_model(
    trained, tmp_path, mode
):
    """Killed while writing the step-6 checkpoint (before its state-file entry, or with
    the entry but a cut-short data file): the rerun resumes from step 4, never reads the
    torn files, and ends with the weights of the run that was never interrupted."""
    cfg, _, features, uninterrupted = trained
    ckpt = tmp_path / "ckpt"
    args = [features, cfg.model, cfg.training]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_SAVE, *(a.model_dump_json() for a in args), ckpt, "6", mode],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (ckpt / "train" / "ckpt-6.index").is_file(), "killed after writing part of ckpt-6"

    resumed = train(features, cfg.model, cfg.features, cfg.training, ckpt)
    assert resumed.resumed_from_step == 4
    assert resumed.steps == uninterrupted.steps
    a, _, _ = load_model(ckpt, "train")
    b, _, _ = load_model(cfg.checkpoint_dir, "train")
    for va, vb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-5, atol=1e-6)


def test_damaged_model_json_in_load_model_says_what_to_do(tmp_path):
    (tmp_path / "model.json").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no trained model"):
        load_model(tmp_path)
